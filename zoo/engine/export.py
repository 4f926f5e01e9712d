"""Export a trained model as ``model.safetensors`` + ``config.json`` in timm's layout.

The folder loads back with ``import zoo; timm.create_model('local-dir:PATH', pretrained=True)``: timm reads
``config.json`` (``architecture``, ``num_classes``, ``model_args`` -- the keyword arguments the model was created
with, so the exact architecture is rebuilt -- and ``pretrained_cfg`` with input size, mean / std,
interpolation, crop and label names) and loads the safetensors weights. The config is written by timm's own
``save_config_for_hf``; a top-level ``attnzoo`` entry (ignored by timm) records which weights were exported
(``model`` or ``ema``) and the recipe they were trained with. Both files are written atomically.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from zoo.files import atomic_write
from zoo.errors import FileError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_model", "load_export", "read_export_config", "unwrap_model"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain timm model inside DDP / torch.compile / EMA wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value



def export_model(
        model: nn.Module,
        output_dir: str | Path,
        *,
        model_args: dict[str, Any] | None = None,
        data_config: dict[str, Any] | None = None,
        label_names: list[str] | None = None,
        weights: str = "model",
        pretrained_cfg: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model`'s weights and timm config to `output_dir`; returns the folder.

    `model_args`: architecture keyword arguments recorded as ``model_args`` (in addition to those timm's
    factory recorded); `data_config`: the preprocessing the weights were trained with (input_size,
    interpolation, mean, std, crop_pct); `weights`: 'model' or 'ema', recorded under ``attnzoo``;
    `pretrained_cfg`: entries replacing the model's own in ``pretrained_cfg`` (e.g. ``tag``);
    `extra`: more JSON-safe entries for ``attnzoo`` (e.g. the recipe, the held-out accuracy).
    """
    from safetensors.torch import save
    from timm.models._hub import save_config_for_hf  # not re-exported by timm.models

    model = unwrap_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # safetensors refuses tensors that share memory; a contiguous copy per entry is what a loader expects.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": "pt"})
    atomic_write(output_dir / WEIGHTS_NAME, lambda f: f.write(data))

    model_config: dict[str, Any] = {"attnzoo": _json_safe(dict(weights=weights, **(extra or {})))}
    if label_names:
        model_config["label_names"] = list(label_names)
    if pretrained_cfg:
        model_config["pretrained_cfg"] = _json_safe(pretrained_cfg)
    # timm's writer takes a path; render into a scratch folder, then publish atomically
    with tempfile.TemporaryDirectory() as scratch:
        scratch_cfg = Path(scratch) / CONFIG_NAME
        save_config_for_hf(model, str(scratch_cfg), model_config=model_config, model_args=_json_safe(model_args or {}),
                           data_config=data_config)
        config = scratch_cfg.read_bytes()
    atomic_write(output_dir / CONFIG_NAME, lambda f: f.write(config))
    return output_dir


def read_export_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder (plain JSON, nothing executed)."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        raise FileNotFoundError(f"{str(Path(path))!r} is not an export folder: it has no {CONFIG_NAME}")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise FileError(f"{str(cfg)!r} is not valid JSON: {e}") from None


def load_export(path: str | Path, **kwargs: Any) -> nn.Module:
    """``timm.create_model('local-dir:PATH', pretrained=True, **kwargs)`` after registering the zoo models."""
    import timm

    import zoo  # noqa: F401  (registers the zoo models with timm)

    from safetensors import safe_open

    path = Path(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an export folder: it has no {WEIGHTS_NAME}")
    read_export_config(path)
    try:  # the header names every tensor and its byte range: a truncated or damaged file fails here, named
        with safe_open(str(weights), "pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own SafetensorError (or OSError) for a damaged header
        raise FileError(f"{str(weights)!r} cannot be read ({type(e).__name__}: {e}); the file is truncated or "
                        f"corrupt (a copy or download that did not finish?)") from None
    return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)

