"""Convert an official (or timm, or zoo) checkpoint into the zoo's export layout.

    python -m zoo.convert --model zoo_davit_tiny --checkpoint davit_tiny.pth.tar --output weights/zoo_davit_tiny

The checkpoint goes through the model family's own ``checkpoint_filter_fn`` (the one ``pretrained=True``
uses), is loaded strictly, and is written as ``model.safetensors`` + ``config.json`` that
``timm.create_model('local-dir:OUTPUT', pretrained=True)`` loads after ``import zoo``. Checkpoints are read
with :func:`load_checkpoint_file`: safetensors, or ``torch.load(weights_only=True)``'s restricted unpickler with the
training configs official files pickle mapped to inert stand-ins; nothing from the file is executed.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

__all__ = ["convert", "load_checkpoint_file", "load_state_dict_file", "checkpoint_filter_for", "main"]


_HTML = (b"<!doctype", b"<html", b"<head", b"<?xml", b"<body")


def _sniff(head: bytes) -> str:
    """What a file's first bytes say it is: 'zip' (torch.save), 'pickle' (legacy torch.save), 'safetensors',
    'html', 'lfs' (a Git LFS pointer) or 'unknown'."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] and head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    stripped = head.lstrip().lower()
    if stripped.startswith(_HTML):
        return "html"
    if stripped.startswith(b"version https://git-lfs"):
        return "lfs"
    return "unknown"


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file, read without executing anything from it.

    Takes ``.safetensors`` files, ``torch.save`` files (zip or legacy), and an export folder (its
    ``model.safetensors``). ``torch.save`` files are read with ``torch.load(weights_only=True)``'s restricted
    unpickler, in which the training configs official checkpoints pickle (``argparse.Namespace``, yacs ``CfgNode``,
    ...) become inert stand-ins (:mod:`zoo.safe_unpickle`); any other pickled global is refused by name.

    Returns the file's top-level dict as saved: a flat state dict, or a training checkpoint's container
    (``{'model': {...}, 'optimizer': ..., 'config': ...}``) that the families' ``checkpoint_filter_fn`` unwrap.
    Raises ``FileNotFoundError`` for a missing file and :class:`zoo.errors.FileError` (a ``ValueError``) naming the
    file and the reason otherwise: empty / truncated / corrupt, an HTML page or Git LFS pointer instead of the file,
    not a checkpoint, a refused global, or not a dict.
    """
    from zoo.errors import FileError
    from zoo.safe_unpickle import UnsafeCheckpointError, torch_load_safe

    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise FileError(f"checkpoint {str(path)!r} is a folder without model.safetensors; give a checkpoint file "
                            f"or an export folder of python -m zoo.convert")
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise FileError(f"checkpoint {str(path)!r} is empty (an interrupted download?); delete it and fetch it again")
    with open(path, "rb") as f:
        kind = _sniff(f.read(64))
    if kind == "html":
        raise FileError(f"checkpoint {str(path)!r} is an HTML page, not a checkpoint: the link it came from is a web "
                        f"page (a preview / share / login page), not the file; use the file's direct download link")
    if kind == "lfs":
        raise FileError(f"checkpoint {str(path)!r} is a Git LFS pointer, not the file: download it through the "
                        f"repository's LFS / raw link")
    if kind == "unknown" and path.suffix != ".safetensors":
        raise FileError(f"checkpoint {str(path)!r} ({size} bytes) is not a checkpoint: neither a torch.save file "
                        f"(zip or pickle) nor safetensors")
    if kind == "safetensors" or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types for a damaged file
            raise FileError(f"checkpoint {str(path)!r} is a truncated or corrupt safetensors file "
                            f"({type(e).__name__}: {e}); delete it and fetch it again") from None
    try:
        obj = torch_load_safe(path)
    except UnsafeCheckpointError as e:
        raise FileError(str(e)) from None
    except pickle.UnpicklingError as e:
        raise FileError(f"checkpoint {str(path)!r} ({size} bytes) cannot be read safely: {e}; if you trust it, "
                        f"re-save its state dict with torch.save or as safetensors") from None
    except Exception as e:  # noqa: BLE001 -- torch's zip / pickle readers raise RuntimeError, EOFError, ...
        raise FileError(f"checkpoint {str(path)!r} ({size} bytes) is truncated or corrupt: torch.load (restricted "
                        f"unpickler) failed with {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                        f"delete it and fetch it again") from None
    if not isinstance(obj, dict):
        raise FileError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    return obj


# the earlier name, kept for callers (zoo.integrations.mmseg)
load_state_dict_file = load_checkpoint_file


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

    import zoo
    from zoo.engine.export import export_model
    from zoo.errors import FileError, InputError

    if model_name not in zoo.list_models():
        close = difflib.get_close_matches(model_name, zoo.list_models(), n=3)
        raise InputError(f"--model {model_name!r} is not a zoo model"
                         + (f"; did you mean {', '.join(close)}?" if close else "; python -m zoo.weights list"))
    state_dict = load_checkpoint_file(checkpoint)
    model = timm.create_model(model_name, pretrained=False, **model_kwargs)
    state_dict = checkpoint_filter_for(model_name)(state_dict, model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise FileError(
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
    from zoo.errors import run_cli

    sys.exit(run_cli("python -m zoo.convert", main, sys.argv[1:]))
