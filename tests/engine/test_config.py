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
    # file: (model, drop path, params (official code), epochs, warmup, lr, lr_base_batch, ema, repeated aug)
    "davit_tiny": ("zoo_davit_tiny", 0.1, 28_360_168, 300, 5, 1e-3, 1024, False, 1),
    "davit_small": ("zoo_davit_small", 0.2, 49_745_896, 300, 5, 1e-3, 1024, False, 1),
    "davit_base": ("zoo_davit_base", 0.4, 87_954_408, 300, 5, 1e-3, 1024, False, 1),
    "biformer_tiny": ("biformer_tiny", 0.1, 13_142_760, 300, 5, 5e-4, 512, True, 3),
    "biformer_small": ("biformer_small", 0.15, 25_536_232, 300, 5, 5e-4, 512, True, 3),
    "biformer_base": ("biformer_base", 0.4, 56_804_968, 300, 5, 5e-4, 512, True, 3),
    # NAT/DiNAT, LITv2, Agent, RAVLT, EMOv2 (the official files each recipe's header names); the rows whose
    # official recipe differs from the shared values checked below have their values in PAPER_RECIPE_VALUES.
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
    "emo2_1m": ("emo2_1m", 0.04036, 1_460_844, 300, 20, 1.5e-3, 512, True, 1),
    "emo2_2m": ("emo2_2m", 0.05, 2_384_312, 300, 20, 1.5e-3, 512, True, 1),
    "emo2_5m": ("emo2_5m", 0.05, 5_126_440, 300, 20, 1.5e-3, 512, True, 1),
    "emo2_20m": ("emo2_20m", 0.1, 20_195_208, 300, 20, 1.5e-3, 512, True, 1),
    "emo2_50m": ("emo2_50m", 0.2, 49_815_560, 300, 20, 1.5e-3, 512, True, 1),
    "agent_deit_t": ("agent_deit_t", 0.0, 6_015_640, 300, 20, 5e-4, 512, False, 1),
    "agent_pvt_l": ("agent_pvt_l", 0.3, 48_738_180, 300, 5, 5e-4, 512, False, 1),
    "agent_swin_b": ("agent_swin_b", 0.5, 88_095_096, 300, 20, 5e-4, 512, False, 1),
    "agent_cswin_t": ("agent_cswin_t", 0.2, 20_458_672, 300, 20, 5e-4, 512, True, 1),
    "agent_cswin_s": ("agent_cswin_s", 0.4, 32_814_100, 300, 20, 5e-4, 512, True, 1),
    "agent_cswin_b": ("agent_cswin_b", 0.5, 73_249_696, 300, 20, 5e-4, 512, True, 1),
}

# The values every PAPER_RECIPES row is checked against unless PAPER_RECIPE_VALUES gives its own:
# aug = (auto_augment, re_prob, re_mode, mixup, cutmix, smoothing).
_SHARED_VALUES = {
    "weight_decay": 0.05, "batch_size": 128, "ema_decay": 0.99996, "crop_pct": 0.875,
    "aug": ("rand-m9-mstd0.5-inc1", 0.25, "pixel", 0.8, 1.0, 0.1),
}
# Per-recipe official values: those that differ from _SHARED_VALUES, and the values every row must name (_EXTRA_VALUES:
# warmup_lr, min_lr, clip_grad, amp, seed, step_on_epochs). The zoo scales only lr (lr_base_batch), so where an official
# trainer also scales warmup / min lr with the batch the recipe holds them at the official global batch.
# EMOv2 (zhangzjn/EMOv2 configs/emo2/emo2_224.py and its training logs): lr x batch / 512, warmup / min lr 2.5e-7 x
# batch / 512 = 5e-7 at the logged batch 1024 (8 x 128), mixup / cutmix / random erasing off, EMA 0.9998, AMP, seed 42.
# Agent (cfgs/*.yaml, config.py, main.py, README train commands on 8 GPUs): WARMUP_LR / MIN_LR are also scaled by
# batch x 8 / 512, no --amp (fp32), per-iteration schedule, CSwin EMA from --model-ema-decay.
# LITv2 (configs, config.py, main.py, README: 8 GPUs x 128): same scaling as Agent (x2), apex O1.
# NAT / DiNAT (configs/*.yml, classification/train.py): nothing scaled, amp, clip 5, seed 42, per-iteration schedule.
# BiFormer / RAVLT (DeiT-style main.py): only lr scaled, no clip, autocast, per-epoch schedule, seed 0.
# DaViT (README command + the repo's train.py + model cfg): nothing scaled, clip 1.0, native AMP, seed 42, crop 0.9.
_EMO2 = {"aug": ("rand-m9-mstd0.5-inc1", 0.0, "pixel", 0.0, 0.0, 0.1), "ema_decay": 0.9998, "warmup_lr": 5e-7,
         "min_lr": 5e-7, "clip_grad": 5.0, "amp": "fp16", "seed": 42, "step_on_epochs": False}
_AGENT = {"amp": None, "seed": 0, "step_on_epochs": False}
_AGENT_CSWIN_TS = {**_AGENT, "ema_decay": 0.99984, "warmup_lr": 2e-6, "min_lr": 2e-5, "clip_grad": None}
_AGENT_DEIT_SWIN = {**_AGENT, "warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": 5.0}  # 5e-7 / 5e-6 x 128 x 8 / 512
_AGENT_PVT_TS = {**_AGENT, "warmup_lr": 2e-6, "min_lr": 2e-5, "clip_grad": None}  # cfg 1e-6 / 1e-5 x 128 x 8 / 512
_LITV2 = {"warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": 5.0, "amp": "fp16", "seed": 0, "step_on_epochs": False}
_NAT = {"warmup_lr": 1e-6, "min_lr": 5e-6, "clip_grad": 5.0, "amp": "fp16", "seed": 42, "step_on_epochs": False}
_DEIT_STYLE = {"warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": None, "amp": "fp16", "seed": 0, "step_on_epochs": True}
_DAVIT = {"warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": 1.0, "amp": "fp16", "seed": 42, "step_on_epochs": False,
          "crop_pct": 0.9}
PAPER_RECIPE_VALUES = {
    "emo2_1m": _EMO2, "emo2_2m": _EMO2, "emo2_5m": _EMO2, "emo2_20m": _EMO2, "emo2_50m": _EMO2,
    "agent_deit_t": {**_AGENT, "batch_size": 512, "warmup_lr": 4e-6, "min_lr": 4e-5, "clip_grad": 5.0},
    "agent_pvt_l": {**_AGENT, "batch_size": 64, "warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": 1.0},
    "agent_swin_b": {**_AGENT, "batch_size": 64, "warmup_lr": 5e-7, "min_lr": 5e-6, "clip_grad": 5.0},
    "agent_deit_s": _AGENT_DEIT_SWIN, "agent_deit_b": _AGENT_DEIT_SWIN,
    "agent_swin_t": _AGENT_DEIT_SWIN, "agent_swin_s": _AGENT_DEIT_SWIN,
    "agent_pvt_t": _AGENT_PVT_TS, "agent_pvt_s": _AGENT_PVT_TS, "agent_pvt_m": {**_AGENT_PVT_TS, "clip_grad": 1.0},
    "agent_cswin_t": _AGENT_CSWIN_TS,
    "agent_cswin_s": _AGENT_CSWIN_TS,
    "agent_cswin_b": {**_AGENT, "batch_size": 64, "weight_decay": 0.1, "ema_decay": 0.99992, "warmup_lr": 1e-6,
                      "min_lr": 1e-5, "clip_grad": None},
    "litv2_small": _LITV2, "litv2_medium": _LITV2, "litv2_base": _LITV2,
    **{f"{family}_{v}": _NAT for family in ("nat", "dinat") for v in ("mini", "tiny", "small", "base")},
    **{f"biformer_{v}": _DEIT_STYLE for v in ("tiny", "small", "base")},
    **{f"ravlt_{v}": _DEIT_STYLE for v in "tsbl"},
    "davit_tiny": _DAVIT, "davit_small": _DAVIT, "davit_base": _DAVIT,
}
_EXTRA_VALUES = ("warmup_lr", "min_lr", "clip_grad", "amp", "seed", "step_on_epochs")


def test_paper_recipe_values_name_known_recipes_and_fields():
    assert set(PAPER_RECIPE_VALUES) == set(PAPER_RECIPES)
    for name, values in PAPER_RECIPE_VALUES.items():
        assert set(values) <= set(_SHARED_VALUES) | set(_EXTRA_VALUES), name
        assert set(_EXTRA_VALUES) <= set(values), (name, set(_EXTRA_VALUES) - set(values))


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
    expect = {**_SHARED_VALUES, **PAPER_RECIPE_VALUES.get(name, {})}
    assert recipe.optim.weight_decay == expect["weight_decay"]
    assert recipe.ema.enabled is ema and recipe.data.repeated_aug == repeats
    assert recipe.data.img_size == 224 and recipe.data.batch_size == expect["batch_size"]
    assert recipe.data.crop_pct == expect["crop_pct"]
    assert recipe.data.name == "folder"
    a = recipe.aug
    assert (a.auto_augment, a.re_prob, a.re_mode, a.mixup, a.cutmix, a.smoothing) == expect["aug"]
    if ema:
        assert recipe.ema.decay == expect["ema_decay"] and recipe.ema.warmup is False
    got = {"warmup_lr": recipe.sched.warmup_lr, "min_lr": recipe.sched.min_lr, "clip_grad": recipe.optim.clip_grad,
           "amp": recipe.train.amp, "seed": recipe.seed, "step_on_epochs": recipe.sched.step_on_epochs}
    for key in _EXTRA_VALUES:
        assert got[key] == expect[key], (key, got[key], expect[key])
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
