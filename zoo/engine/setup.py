"""What training and evaluation set up the same way for every task: the device, the seeds, the model (through
``timm.create_model``; the engine knows models only by name), its data config, autocast and starting weights."""
from __future__ import annotations

import contextlib
import importlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.engine.checkpoint import CheckpointError
from zoo.engine.schema import Recipe, RecipeError

__all__ = [
    "InitWeights", "autocast", "create_model", "ema_weights", "load_init_weights", "model_data_config",
    "resolve_data_config",
    "resolve_device", "seed_everything",
]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RecipeError(f"device {name!r} is not a device name; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {name!r} was asked for, but this machine has no CUDA device; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str | None):
    """``torch.autocast`` for a recipe's ``train.amp`` ('bf16', 'fp16'); a no-op without it."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def create_model(recipe: Recipe, num_classes: int) -> nn.Module:
    """``timm.create_model(recipe.model.name, num_classes=..., **recipe.model.kwargs)``, errors in recipe terms."""
    import timm

    import zoo  # noqa: F401  (registers the zoo models with timm)

    cfg = recipe.model
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.kwargs.items()}
    reserved = sorted({"num_classes", "pretrained", "drop_rate", "drop_path_rate"} & kwargs.keys())
    if reserved:
        raise RecipeError(
            f"model.kwargs must not set {', '.join(reserved)}: the number of classes comes from the data set, "
            f"the others have their own keys (model.pretrained, model.drop_rate, model.drop_path_rate)")
    try:
        return timm.create_model(
            cfg.name, pretrained=cfg.pretrained, num_classes=num_classes,
            drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **kwargs)
    except RuntimeError as e:
        if str(e).startswith("Unknown model"):
            raise RecipeError(
                f"model.name {cfg.name!r} is not a registered timm or zoo model; zoo models: "
                f"{', '.join(zoo.list_models()) or '(none)'}") from None
        raise
    except TypeError as e:
        raise RecipeError(f"model.kwargs {cfg.kwargs} are not accepted by {cfg.name!r}: {e}") from None


def model_data_config(model: nn.Module, **args: Any) -> dict[str, Any]:
    """``timm.data.resolve_data_config`` of `model` with `args` (None: the model's pretrained_cfg), lists as tuples."""
    import timm.data

    cfg = timm.data.resolve_data_config(args={k: v for k, v in args.items() if v is not None}, model=model)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def resolve_data_config(recipe: Recipe, model: nn.Module) -> dict[str, Any]:
    """Input size / interpolation / mean / std / crop of the recipe, the model's pretrained_cfg filling gaps."""
    d = recipe.data
    return model_data_config(model, input_size=(3, d.img_size, d.img_size), interpolation=d.interpolation,
                             mean=d.mean, std=d.std, crop_pct=d.crop_pct)


@dataclass
class InitWeights:
    """What :func:`load_init_weights` did: weights the model kept from its own initialisation (`missing`), checkpoint
    weights it did not use (`unexpected`), and the layers re-initialised because they do not fit the model
    (`reinitialised`: ``name -> why``, e.g. the classifier of another number of classes)."""
    missing: list[str]
    unexpected: list[str]
    reinitialised: dict[str, str]

    def describe(self) -> str:
        parts = [f"re-initialised {name} ({why})" for name, why in self.reinitialised.items()]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {', '.join(self.missing[:6])}"
                         f"{', ...' if len(self.missing) > 6 else ''}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unused")
        return f" ({'; '.join(parts)})" if parts else ""


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _fit_to_model(model: nn.Module, sd: dict[str, Any], own: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What timm's ``pretrained=True`` does to fit weights to a model built with other ``num_classes`` /
    ``in_chans``: the classifier (``pretrained_cfg['classifier']``) is dropped where its shape differs, so it keeps
    the model's initialisation; the first conv (``pretrained_cfg['first_conv']``) is adapted to the model's input
    channels by timm's ``adapt_input_conv``. Position tables of another input size are the family's
    ``checkpoint_filter_fn``'s business (it runs before this)."""
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    sd = dict(sd)
    reinit: dict[str, str] = {}
    for name in _names(cfg.get("classifier")):
        weight = f"{name}.weight"
        if weight in sd and (weight not in own or own[weight].shape != sd[weight].shape):
            theirs, mine = sd[weight].shape[0], own[weight].shape[0] if weight in own else 0
            for key in (weight, f"{name}.bias"):
                sd.pop(key, None)
            reinit[name] = f"checkpoint {theirs} classes, model {mine}"
    for name in _names(cfg.get("first_conv")):
        key = f"{name}.weight"
        if key in sd and key in own and sd[key].ndim == 4 and sd[key].shape[1] != own[key].shape[1]:
            theirs = sd[key].shape[1]
            try:
                sd[key] = adapt_input_conv(own[key].shape[1], sd[key])
            except NotImplementedError as e:
                raise CheckpointError(f"the first conv {name} of the checkpoint takes {theirs} channels and cannot be "
                                      f"adapted to the model's {own[key].shape[1]}: {e}") from None
            reinit[f"{name} (adapted)"] = f"{theirs} -> {own[key].shape[1]} input channels, timm's adapt_input_conv"
    return sd, reinit


def load_init_weights(model: nn.Module, path: str | Path, strict: bool = True) -> InitWeights:
    """Load starting weights into `model` the way timm's ``pretrained=True`` does: an export folder
    (model.safetensors), a training checkpoint of this engine (EMA weights when present) or an official checkpoint
    file, read without executing anything from it (``zoo.convert.load_checkpoint_file``) and converted by the
    model family's ``checkpoint_filter_fn``. A classifier of another number of classes is re-initialised and the
    first conv adapted to the model's input channels (both reported); every other weight must fit, and with
    `strict` every other weight of the model must be in the checkpoint."""
    from zoo.convert import load_checkpoint_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model.init_checkpoint {str(path)!r} does not exist")
    sd = load_checkpoint_file(path)
    if "recipe" in sd and "model" in sd:  # this engine's training checkpoint
        sd = ema_weights(sd["ema"]) if sd.get("ema") is not None else sd["model"]
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"model.init_checkpoint {str(path)!r} cannot be converted for this model "
                                  f"({type(e).__name__}: {e})") from None
    own = model.state_dict()
    sd, reinit = _fit_to_model(model, sd, own)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
             if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(
            f"model.init_checkpoint {str(path)!r} does not fit the model: {len(wrong)} weights differ in shape "
            f"(checkpoint vs model): {'; '.join(wrong[:4])}{'; ...' if len(wrong) > 4 else ''}")
    result = model.load_state_dict(sd, strict=False)
    reinit_keys = {f"{n}.{p}" for n in reinit for p in ("weight", "bias")}
    missing = [k for k in result.missing_keys if k not in reinit_keys]
    if strict and (missing or result.unexpected_keys):
        raise CheckpointError(
            f"model.init_checkpoint {str(path)!r} does not fit the model (model.init_strict true): "
            f"{len(missing)} of the model's weights are not in it ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}) and {len(result.unexpected_keys)} of its weights are not in "
            f"the model ({', '.join(result.unexpected_keys[:5])}{', ...' if len(result.unexpected_keys) > 5 else ''})")
    return InitWeights(missing, list(result.unexpected_keys), reinit)


def ema_weights(ema_state: dict[str, Any]) -> dict[str, Any]:
    """The model weights in a ``timm.utils.ModelEmaV3`` state dict (the averaged copy lives under ``module.``)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}
