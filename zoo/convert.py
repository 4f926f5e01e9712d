"""Convert an official (or timm, or zoo) checkpoint into the zoo's export layout.

    python -m zoo.convert --model zoo_davit_tiny --checkpoint davit_tiny.pth.tar --output weights/zoo_davit_tiny

The checkpoint goes through the model family's own ``checkpoint_filter_fn`` (the one ``pretrained=True``
uses), is loaded strictly, and is written as ``model.safetensors`` + ``config.json`` that
``timm.create_model('local-dir:OUTPUT', pretrained=True)`` loads after ``import zoo``. Checkpoints are read
with safetensors or ``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["convert", "load_state_dict_file", "checkpoint_filter_for", "main"]


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised with what the user can do about it
        raise ValueError(
            f"cannot read {str(path)!r} with torch.load(weights_only=True) ({type(e).__name__}: {e}); "
            "a checkpoint that needs full unpickling is not loaded -- re-save its state dict from a trusted "
            "environment (torch.save(model.state_dict(), ...)) or as safetensors"
        ) from None


def checkpoint_filter_for(model_name: str) -> Callable[[dict[str, Any], nn.Module], dict[str, Any]]:
    """The ``checkpoint_filter_fn`` of the zoo family that registers `model_name`."""
    from timm.models import model_entrypoint

    import zoo

    if model_name not in zoo.list_models():
        raise ValueError(f"{model_name!r} is not a zoo model; zoo models: {', '.join(zoo.list_models())}")
    module = sys.modules[model_entrypoint(model_name).__module__]
    return module.checkpoint_filter_fn


def convert(model_name: str, checkpoint: str | Path, output_dir: str | Path, **model_kwargs: Any) -> Path:
    """Load `checkpoint` into `model_name` through its family's filter and export it to `output_dir`."""
    import timm
    from timm.data import resolve_data_config

    from zoo.engine.export import export_model

    state_dict = load_state_dict_file(checkpoint)
    model = timm.create_model(model_name, pretrained=False, **model_kwargs)
    state_dict = checkpoint_filter_for(model_name)(state_dict, model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{str(checkpoint)!r} does not fit {model_name}: missing keys {sorted(missing)[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {sorted(unexpected)[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    return export_model(
        model,
        output_dir,
        model_args=model_kwargs,
        data_config=resolve_data_config(model=model),
        extra={"converted_from": Path(checkpoint).name, "source_sha256": digest},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo model name, e.g. zoo_davit_tiny")
    parser.add_argument("--checkpoint", required=True, help="official / timm / zoo checkpoint (.pth, .safetensors)")
    parser.add_argument("--output", required=True, help="folder for model.safetensors + config.json")
    args = parser.parse_args(argv)
    out = convert(args.model, args.checkpoint, args.output)
    print(f"converted {args.checkpoint} -> {out} (load with timm.create_model('local-dir:{out}', pretrained=True))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
