"""Recipes: YAML files validated against the schema of :mod:`zoo.engine.schema` (nested dataclasses).

A recipe is read with :func:`load_recipe` (or :func:`recipe_from_dict`); every key must belong to the schema,
so a misspelled key is an error that names it and lists the valid keys of its section, and a value of
the wrong type is an error naming the key and the expected type. Command-line overrides use one form,
``--set section.key=value`` (the value is parsed as YAML: ``--set optim.lr=1e-3``,
``--set model.kwargs.depths=[1,1,2,1]``, ``--set ema.enabled=true``) and go through the same validation.
The valid ``task`` values and each task's own checks come from the task registry (:mod:`zoo.engine.tasks`).

The embedded default (``python train.py`` with no argument) is :data:`DEFAULT_RECIPE`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from zoo.engine.schema import (  # noqa: F401  (DEFAULT_RECIPE is re-exported)
    DEFAULT_RECIPE,
    AugConfig, DataConfig, EmaConfig, ModelConfig, OptimConfig, Recipe, RecipeError, SchedConfig, SrConfig,
    TrainConfig, load_yaml, parse_override,
)
from zoo.engine.tasks import TASKS

__all__ = [
    "DEFAULT_RECIPE", "RecipeError",
    "Recipe", "ModelConfig", "DataConfig", "AugConfig", "OptimConfig", "SchedConfig", "EmaConfig", "TrainConfig",
    "SrConfig",
    "apply_overrides", "load_recipe", "recipe_from_dict", "recipe_to_dict", "recipe_to_yaml",
]



# ----------------------------------------------------------------------------------------------------------------
# Validation

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# What a recipe value of each scalar type hint may be (YAML and the command line give ints where floats are meant;
# a bool is never a number).
_SCALARS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """`value` checked against the type hint `tp` (and lightly converted: int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    bad = RecipeError(f"recipe key '{key}' in {source} must be {_type_name(tp)}, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key + ".", source)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except RecipeError:
                pass
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            raise bad
        return tuple(_coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if tp in _SCALARS:
        if not _SCALARS[tp](value):
            raise bad
        return float(value) if tp is float else value
    raise TypeError(f"unsupported type hint {tp!r} for recipe key '{key}'")  # a schema bug, not a user error


def _build(cls: type, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            section = f"section '{prefix[:-1]}'" if prefix else "the top level"
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise RecipeError(
                f"unknown recipe key '{prefix}{key}' in {source}{hint}; valid keys in {section}: {', '.join(valid)}")
    return cls(**{k: _coerce(hints[k], v, prefix + k, source) for k, v in data.items()})


def _check_values(recipe: Recipe, source: str) -> None:
    """Value checks the types alone cannot express."""
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            raise RecipeError(f"recipe key '{key}' in {source} must be {what}, got {value!r}")

    task = TASKS.get(recipe.task)
    need(task is not None, "task", "one of " + ", ".join(map(repr, TASKS)), recipe.task)
    if not task.recipe:
        raise RecipeError(
            f"recipe key 'task' in {source}: task {recipe.task!r} is not implemented yet; implemented tasks: "
            f"{', '.join(name for name, t in TASKS.items() if t.recipe)} (YAML recipes). {task.recipe_help}")
    need(recipe.train.epochs >= 1, "train.epochs", "at least 1", recipe.train.epochs)
    need(recipe.train.eval_every >= 1, "train.eval_every", "at least 1", recipe.train.eval_every)
    need(recipe.train.checkpoint_every >= 1, "train.checkpoint_every", "at least 1", recipe.train.checkpoint_every)
    need(recipe.train.threads is None or recipe.train.threads >= 1, "train.threads", "null or at least 1",
         recipe.train.threads)
    need(recipe.data.batch_size >= 1, "data.batch_size", "at least 1", recipe.data.batch_size)
    need(recipe.data.eval_batch_size >= 1, "data.eval_batch_size", "at least 1", recipe.data.eval_batch_size)
    need(recipe.data.img_size >= 1, "data.img_size", "at least 1", recipe.data.img_size)
    need(recipe.data.num_workers >= 0, "data.num_workers", "0 or more", recipe.data.num_workers)
    need(0.0 < recipe.data.test_fraction < 1.0, "data.test_fraction", "between 0 and 1", recipe.data.test_fraction)
    need(recipe.data.train_subset is None or recipe.data.train_subset >= 1, "data.train_subset",
         "null or at least 1", recipe.data.train_subset)
    mixing = recipe.aug.mixup > 0 or recipe.aug.cutmix > 0
    need(not mixing or recipe.data.batch_size % 2 == 0, "data.batch_size",
         "even when aug.mixup or aug.cutmix is on (timm's Mixup pairs the batch)", recipe.data.batch_size)
    need(recipe.optim.lr > 0, "optim.lr", "positive", recipe.optim.lr)
    need(recipe.optim.accum_steps >= 1, "optim.accum_steps", "at least 1", recipe.optim.accum_steps)
    need(0.0 <= recipe.aug.smoothing < 1.0, "aug.smoothing", "in [0, 1)", recipe.aug.smoothing)
    need(0.0 <= recipe.ema.decay < 1.0, "ema.decay", "in [0, 1)", recipe.ema.decay)
    need(recipe.sched.warmup_epochs >= 0, "sched.warmup_epochs", "0 or more", recipe.sched.warmup_epochs)
    need(recipe.data.name not in ("folder", "shards") or bool(recipe.data.root), "data.root",
         ("the ImageFolder root directory" if recipe.data.name == "folder" else "the tar shards' root directory")
         + f" when data.name is {recipe.data.name!r}", recipe.data.root)
    need(recipe.data.repeated_aug >= 1, "data.repeated_aug", "at least 1", recipe.data.repeated_aug)
    need(recipe.optim.lr_base_batch is None or recipe.optim.lr_base_batch >= 1, "optim.lr_base_batch",
         "null or at least 1", recipe.optim.lr_base_batch)
    need(recipe.train.checkpoint_every_steps is None or recipe.train.checkpoint_every_steps >= 1,
         "train.checkpoint_every_steps", "null or at least 1", recipe.train.checkpoint_every_steps)
    need(recipe.train.log_every >= 1, "train.log_every", "at least 1", recipe.train.log_every)
    need(recipe.optim.clip_grad is None or recipe.optim.clip_grad > 0, "optim.clip_grad", "null or positive",
         recipe.optim.clip_grad)
    need(recipe.optim.layer_decay is None or 0.0 < recipe.optim.layer_decay <= 1.0, "optim.layer_decay",
         "null or in (0, 1]", recipe.optim.layer_decay)
    for key in ("mean", "std"):
        value = getattr(recipe.data, key)
        need(value is None or len(value) in (1, 3), f"data.{key}", "null or a list of 1 or 3 numbers", value)
    m = recipe.sched.milestones
    need(all(x >= 1 for x in m) and list(m) == sorted(set(m)), "sched.milestones",
         "strictly increasing positive epochs", list(m))
    need(recipe.sched.sched != "multistep" or bool(m), "sched.milestones", "set when sched.sched is 'multistep'",
         list(m))
    need(recipe.sched.decay_rate > 0, "sched.decay_rate", "positive", recipe.sched.decay_rate)
    need(recipe.optim.betas is None or all(0.0 <= b < 1.0 for b in recipe.optim.betas), "optim.betas",
         "null or two numbers in [0, 1)", recipe.optim.betas)
    need(not recipe.model.init_checkpoint or not recipe.model.pretrained, "model.init_checkpoint",
         "null when model.pretrained is true (one starting point)", recipe.model.init_checkpoint)
    task.check_recipe(recipe, need)
    need(recipe.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?|mps", recipe.device) is not None,
         "device", "'auto', 'cpu', 'cuda' or 'cuda:N'", recipe.device)



def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    """A validated :class:`Recipe` from a plain mapping (e.g. parsed YAML); `source` names it in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source} must be a mapping of recipe keys, got {_show(data)}")
    recipe = _build(Recipe, data, "", source)
    _check_values(recipe, source)
    return recipe



def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of the raw recipe mapping `data` with ``section.key=value`` overrides applied (not yet validated;
    :func:`recipe_from_dict` then reports unknown keys and bad types as for a file)."""
    import copy
    data = copy.deepcopy(data) if data else {}
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(path[:i + 1])
                raise RecipeError(f"override {item!r}: '{section}' is a value ({child!r}), not a section")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The validated recipe in the YAML file `path` (the embedded default when None), with `overrides`."""
    path = Path(path) if path is not None else DEFAULT_RECIPE
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    data = load_yaml(path.read_text(), f"recipe {str(path)!r}")
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"recipe {str(path)!r} must be a mapping of recipe keys, got {_show(data)}")
    source = f"recipe {str(path)!r}" + (" with --set overrides" if overrides else "")
    return recipe_from_dict(apply_overrides(data or {}, overrides), source)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain dicts / lists / scalars (YAML, JSON and `torch.load(weights_only=True)` safe)."""
    return _plain(dataclasses.asdict(recipe))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
