"""What training and evaluation set up the same way for every task: the device, the seeds, the model (through
``timm.create_model``; the engine knows models only by name), its data config, autocast and starting weights."""
from __future__ import annotations

import contextlib
import importlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.engine.checkpoint import CheckpointError
from zoo.engine.export import WEIGHTS_NAME
from zoo.engine.schema import Recipe, RecipeError

__all__ = [
    "autocast", "create_model", "ema_weights", "load_init_weights", "model_data_config", "resolve_data_config",
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


def load_init_weights(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load starting weights into `model`: an export folder (model.safetensors), a training checkpoint of this
    engine (EMA weights when present) or another checkpoint file (e.g. BasicSR's ``params_ema`` / ``params``,
    converted by the model's ``checkpoint_filter_fn`` when its module has one). Returns (missing, unexpected)."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"model.init_checkpoint {str(path)!r} is a folder without {WEIGHTS_NAME}")
        sd = load_file(str(path / WEIGHTS_NAME))
    elif path.is_file():
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "recipe" in sd and "model" in sd:  # this engine's training checkpoint
            sd = ema_weights(sd["ema"]) if sd.get("ema") is not None else sd["model"]
        filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            sd = filter_fn(sd, model)
    else:
        raise FileNotFoundError(f"model.init_checkpoint {str(path)!r} does not exist")
    try:
        result = model.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"model.init_checkpoint {str(path)!r} does not fit the model "
                              f"(model.init_strict {strict}): {e}") from None
    return list(result.missing_keys), list(result.unexpected_keys)


def ema_weights(ema_state: dict[str, Any]) -> dict[str, Any]:
    """The model weights in a ``timm.utils.ModelEmaV3`` state dict (the averaged copy lives under ``module.``)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}
