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
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

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


def _tmp_path(path: Path) -> Path:
    """An empty temporary file beside `path` (same file system, so `os.replace` is atomic), with the
    permissions a plain ``open(path, 'w')`` would give rather than mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf  # not re-exported by timm.models

    model = unwrap_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # safetensors refuses tensors that share memory; a contiguous copy per entry is what a loader expects.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = _tmp_path(output_dir / WEIGHTS_NAME)
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, 0o666 & ~_umask())  # save_file recreates the file with its own mode
        os.replace(tmp, output_dir / WEIGHTS_NAME)
    finally:
        tmp.unlink(missing_ok=True)

    model_config: dict[str, Any] = {"attnzoo": _json_safe(dict(weights=weights, **(extra or {})))}
    if label_names:
        model_config["label_names"] = list(label_names)
    if pretrained_cfg:
        model_config["pretrained_cfg"] = _json_safe(pretrained_cfg)
    tmp = _tmp_path(output_dir / CONFIG_NAME)
    try:
        save_config_for_hf(model, str(tmp), model_config=model_config, model_args=_json_safe(model_args or {}),
                           data_config=data_config)
        os.replace(tmp, output_dir / CONFIG_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    return output_dir


def read_export_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder (plain JSON, nothing executed)."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        raise FileNotFoundError(f"{str(Path(path))!r} is not an export folder: it has no {CONFIG_NAME}")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(cfg)!r} is not valid JSON: {e}") from None


def load_export(path: str | Path, **kwargs: Any) -> nn.Module:
    """``timm.create_model('local-dir:PATH', pretrained=True, **kwargs)`` after registering the zoo models."""
    import timm

    import zoo  # noqa: F401  (registers the zoo models with timm)

    path = Path(path)
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not an export folder: it has no {WEIGHTS_NAME}")
    read_export_config(path)
    return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)

