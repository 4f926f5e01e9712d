"""Recipes: schema validation (unknown keys, types, values), --set overrides, the embedded default."""
from __future__ import annotations

import pytest
import yaml
from engine_helpers import tiny_recipe_dict

from zoo.engine.config import (
    DEFAULT_RECIPE, RecipeError, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict, recipe_to_yaml,
)


def test_default_recipe_is_the_digits_davit():
    recipe = load_recipe()
    assert DEFAULT_RECIPE.name == "digits_davit.yaml"
    assert recipe.task == "cls"
    assert recipe.model.name == "zoo_davit_tiny"
    assert recipe.data.name == "digits"
    assert recipe.aug.hflip == 0.0  # digits are not mirror-symmetric


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(tiny_recipe_dict(epochs=3))
    msg = str(e.value)
    assert "unknown recipe key 'epochs'" in msg
    for key in ("task", "model", "data", "optim", "sched", "train"):
        assert key in msg


def test_misspelled_nested_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    data = tiny_recipe_dict()
    data["optim"]["lrr"] = 0.1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert "'optim.lrr'" in msg and "did you mean 'optim.lr'" in msg
    assert "valid keys in section 'optim': opt, lr, weight_decay" in msg
    assert str(path) in msg


@pytest.mark.parametrize("section, key, value, expected", [
    ("optim", "lr", "fast", "a number"),
    ("train", "epochs", 2.5, "an integer"),
    ("train", "epochs", True, "an integer"),
    ("ema", "enabled", "yes", "true/false"),
    ("aug", "scale", [0.5], "a list of 2 values"),
    ("data", "name", "imagenet", "one of 'digits', 'folder'"),
    ("data", "mean", "grey", "a list of a number or null"),
    ("model", "kwargs", [1, 2], "a mapping"),
    ("sched", "sched", "plateau", "one of 'cosine', 'tanh', 'poly', 'constant'"),
])
def test_wrong_type_names_the_key_and_the_expected_type(section, key, value, expected):
    data = tiny_recipe_dict()
    data.setdefault(section, {})[key] = value
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(data)
    msg = str(e.value)
    assert f"'{section}.{key}'" in msg and expected in msg and repr(value) in msg


def test_a_section_given_as_a_value_is_an_error():
    with pytest.raises(RecipeError, match="'optim' .* must be a mapping"):
        recipe_from_dict(tiny_recipe_dict(optim=0.1))


def test_bad_values_are_errors():
    with pytest.raises(RecipeError, match=r"'train.epochs' .* at least 1, got 0"):
        recipe_from_dict(tiny_recipe_dict(train={"epochs": 0}))
    with pytest.raises(RecipeError, match=r"'data.root' .* ImageFolder root"):
        recipe_from_dict(tiny_recipe_dict(data={"name": "folder"}))
    with pytest.raises(RecipeError, match="'task'.*one of 'cls', 'seg', 'sr'"):
        recipe_from_dict(tiny_recipe_dict(task="detection"))


def test_numbers_are_coerced_and_lists_become_tuples():
    recipe = recipe_from_dict(tiny_recipe_dict(optim={"lr": 1}))
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float)
    assert recipe.aug.scale == (0.6, 1.0)


def test_overrides_parse_yaml_values():
    recipe = load_recipe(DEFAULT_RECIPE, ["optim.lr=1e-3", "train.epochs=3", "ema.enabled=true",
                                          "model.kwargs.depths=[1,1,2,1]", "data.train_subset=null"])
    assert recipe.optim.lr == pytest.approx(1e-3)
    assert recipe.train.epochs == 3
    assert recipe.ema.enabled is True
    assert recipe.model.kwargs["depths"] == [1, 1, 2, 1]


def test_overrides_are_validated_like_the_file():
    with pytest.raises(RecipeError, match="unknown recipe key 'optim.learning_rate'.*with --set overrides"):
        load_recipe(DEFAULT_RECIPE, ["optim.learning_rate=0.1"])
    with pytest.raises(RecipeError, match="'train.epochs' .* an integer, got 'many'"):
        load_recipe(DEFAULT_RECIPE, ["train.epochs=many"])
    with pytest.raises(RecipeError, match="not of the form section.key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(RecipeError, match="'task' is a value"):
        apply_overrides({"task": "cls"}, ["task.x=1"])


def test_missing_file_and_non_mapping_are_errors(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {lr: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(broken)


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    recipe = load_recipe()
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe_to_yaml(recipe))
    assert load_recipe(path) == recipe
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


# ----------------------------------------------------------------------------------------------------------------
# The paper recipes: configs/cls/<family>_<variant>.yaml, validated on load, the right variant and hyper-parameters

PAPER_RECIPES = {
    # file: (model, drop path, params (reference section 3), epochs, warmup, lr, lr_base_batch, ema, repeated aug)
    "davit_tiny": ("zoo_davit_tiny", 0.1, 28_360_168, 300, 20, 1e-3, 1024, False, 1),
    "davit_small": ("zoo_davit_small", 0.2, 49_745_896, 300, 20, 1e-3, 1024, False, 1),
    "davit_base": ("zoo_davit_base", 0.4, 87_954_408, 300, 20, 1e-3, 1024, False, 1),
    "biformer_tiny": ("biformer_tiny", 0.1, 13_142_760, 300, 5, 5e-4, 512, True, 3),
    "biformer_small": ("biformer_small", 0.15, 25_536_232, 300, 5, 5e-4, 512, True, 3),
    "biformer_base": ("biformer_base", 0.4, 56_804_968, 300, 5, 5e-4, 512, True, 3),
    # NAT/DiNAT, LITv2, Agent, RAVLT (../shared/reference/{nat_dinat,litv2,agent,ravlt}.md). Not listed because the
    # checks below fix values their official recipes do not use: emo2_* (mixup/cutmix off, random erasing 0),
    # agent_deit_t (512 images/GPU), agent_pvt_l and agent_swin_b (64/GPU), agent_cswin_* (EMA 0.99984/0.99992;
    # CSwin-B also 64/GPU and wd 0.1).
    "nat_mini": ("nat_mini", 0.2, 19_984_174, 300, 20, 1e-3, 1024, False, 1),
    "nat_tiny": ("nat_tiny", 0.2, 27_901_582, 300, 20, 1e-3, 1024, False, 1),
    "nat_small": ("nat_small", 0.3, 50_743_297, 300, 20, 1e-3, 1024, False, 1),
    "nat_base": ("nat_base", 0.5, 89_769_652, 300, 20, 1e-3, 1024, False, 1),
    "dinat_mini": ("dinat_mini", 0.2, 19_984_174, 300, 20, 1e-3, 1024, False, 1),
    "dinat_tiny": ("dinat_tiny", 0.2, 27_901_582, 300, 20, 1e-3, 1024, False, 1),
    "dinat_small": ("dinat_small", 0.3, 50_719_681, 300, 20, 1e-3, 1024, False, 1),
    "dinat_base": ("dinat_base", 0.5, 89_769_652, 300, 20, 1e-3, 1024, False, 1),
    "litv2_small": ("litv2_small", 0.2, 27_844_000, 300, 20, 5e-4, 512, False, 1),
    "litv2_medium": ("litv2_medium", 0.3, 48_830_368, 300, 20, 5e-4, 512, False, 1),
    "litv2_base": ("litv2_base", 0.5, 86_520_704, 300, 20, 5e-4, 512, False, 1),
    "agent_deit_s": ("agent_deit_s", 0.1, 22_647_112, 300, 20, 5e-4, 512, False, 1),
    "agent_deit_b": ("agent_deit_b", 0.3, 87_204_904, 300, 20, 5e-4, 512, False, 1),
    "agent_pvt_t": ("agent_pvt_t", 0.1, 11_570_352, 300, 5, 5e-4, 512, False, 1),
    "agent_pvt_s": ("agent_pvt_s", 0.1, 20_635_066, 300, 5, 5e-4, 512, False, 1),
    "agent_pvt_m": ("agent_pvt_m", 0.3, 35_921_746, 300, 5, 5e-4, 512, False, 1),
    "agent_swin_t": ("agent_swin_t", 0.2, 28_902_964, 300, 20, 5e-4, 512, False, 1),
    "agent_swin_s": ("agent_swin_s", 0.3, 49_666_684, 300, 20, 5e-4, 512, False, 1),
    "ravlt_t": ("ravlt_t", 0.1, 14_897_768, 300, 5, 5e-4, 512, True, 3),
    "ravlt_s": ("ravlt_s", 0.15, 25_591_208, 300, 5, 5e-4, 512, True, 3),
    "ravlt_b": ("ravlt_b", 0.4, 48_241_288, 300, 5, 5e-4, 512, True, 3),
    "ravlt_l": ("ravlt_l", 0.55, 95_242_440, 300, 5, 5e-4, 512, True, 3),
}


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipes_load_and_name_their_variant(name):
    import timm
    import torch

    from zoo.engine.config import DEFAULT_RECIPE

    model, drop_path, params, epochs, warmup, lr, base_batch, ema, repeats = PAPER_RECIPES[name]
    recipe = load_recipe(DEFAULT_RECIPE.parent / f"{name}.yaml")
    assert recipe.model.name == model and recipe.model.drop_path_rate == drop_path
    assert recipe.train.epochs == epochs and recipe.sched.warmup_epochs == warmup and recipe.sched.sched == "cosine"
    assert recipe.optim.opt == "adamw" and recipe.optim.lr == lr and recipe.optim.lr_base_batch == base_batch
    assert recipe.optim.weight_decay == 0.05 and recipe.ema.enabled is ema and recipe.data.repeated_aug == repeats
    assert recipe.data.img_size == 224 and recipe.data.batch_size == 128 and recipe.data.name == "folder"
    a = recipe.aug
    assert (a.auto_augment, a.re_prob, a.re_mode, a.mixup, a.cutmix, a.smoothing) == (
        "rand-m9-mstd0.5-inc1", 0.25, "pixel", 0.8, 1.0, 0.1)
    if ema:
        assert recipe.ema.decay == 0.99996
    if name.startswith("davit"):
        assert recipe.optim.clip_grad == 1.0 and recipe.train.amp == "fp16"
    with torch.device("meta"):  # the variant exists with these arguments (no memory, no weights)
        net = timm.create_model(model, num_classes=1000, drop_path_rate=drop_path)
    if params is not None:
        assert sum(p.numel() for p in net.parameters()) == params


_ALL_CLS_RECIPES = sorted(p.stem for p in DEFAULT_RECIPE.parent.glob("*.yaml"))


@pytest.mark.parametrize("name", _ALL_CLS_RECIPES)
def test_every_cls_recipe_loads_and_builds_its_model(name):
    """Every recipe in configs/cls (those with no PAPER_RECIPES row included): valid on load, and its model, with
    the recipe's model arguments, builds on the meta device with the official parameter count."""
    import sys
    from pathlib import Path

    import timm
    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    from param_counts import PARAM_COUNTS

    recipe = load_recipe(DEFAULT_RECIPE.parent / f"{name}.yaml")
    assert timm.is_model(recipe.model.name), f"{name}.yaml names {recipe.model.name!r}, not a registered model"
    if recipe.data.name == "digits":  # the embedded demo: a small DaViT with its own kwargs, tested elsewhere
        return
    with torch.device("meta"):
        net = timm.create_model(recipe.model.name, num_classes=1000, drop_path_rate=recipe.model.drop_path_rate)
    assert sum(p.numel() for p in net.parameters()) == PARAM_COUNTS[recipe.model.name]


def test_recipe_values_that_cannot_work_are_errors():
    with pytest.raises(RecipeError, match="'data.repeated_aug' .* at least 1, got 0"):
        recipe_from_dict(tiny_recipe_dict(data={"repeated_aug": 0}))
    with pytest.raises(RecipeError, match="'train.parallel' .* one of 'ddp', 'fsdp'"):
        recipe_from_dict(tiny_recipe_dict(train={"parallel": "zero3"}))
    with pytest.raises(RecipeError, match="'data.root' .* tar shards' root directory"):
        recipe_from_dict(tiny_recipe_dict(data={"name": "shards"}))
    with pytest.raises(RecipeError, match="'optim.layer_decay' .* in \\(0, 1\\]"):
        recipe_from_dict(tiny_recipe_dict(optim={"layer_decay": 1.5}))
