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
