"""Training checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is one ``.pth`` file holding a plain dict: the model, optimizer, scheduler, grad-scaler and EMA
state dicts, the epoch / optimizer-step counters, the RNG states (as tensors and plain values, so that
``weights_only=True`` can read them) and the resolved recipe. It is written to a temporary file in the same
folder and renamed over the target with ``os.replace``, so a run killed mid-write leaves the previous
checkpoint intact, never a half-written one. The training loop also keeps the checkpoint before the last one as
``checkpoint-prev.pth`` (a hard link taken before the new file replaces the old, so at every moment both names
point at complete files): if the last one is damaged later (a copy cut short, a disk error), the error says so and
names the previous one to resume from.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import UserError
from zoo.files import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT", "LAST_CHECKPOINT", "PREVIOUS_CHECKPOINT", "CheckpointError",
    "find_last_checkpoint", "get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state",
]

CHECKPOINT_FORMAT = "attnzoo-train-checkpoint-v1"
LAST_CHECKPOINT = "checkpoint-last.pth"
PREVIOUS_CHECKPOINT = "checkpoint-prev.pth"
_REQUIRED = ("format", "epoch", "step", "model", "recipe")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or is not a zoo training checkpoint."""



def save_checkpoint(path: str | Path, state: dict[str, Any], *, keep_previous: str | Path | None = None) -> Path:
    """Write `state` (a dict with at least epoch, step, model, recipe) to `path` atomically. `keep_previous`:
    first make the file now at `path` (if any) available under this name too (hard link, atomic rename)."""
    missing = [k for k in _REQUIRED if k != "format" and k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {', '.join(missing)}")
    path = Path(path)
    if keep_previous is not None and path.is_file():
        keep_previous = Path(keep_previous)
        tmp = keep_previous.with_name(f".{keep_previous.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links: a copy (still published atomically)
            import shutil
            shutil.copyfile(path, tmp)
        os.replace(tmp, keep_previous)
    atomic_write(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict saved by :func:`save_checkpoint`; a missing, truncated, foreign or corrupt file is a
    :class:`CheckpointError` naming it. Nothing but tensors and plain values is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a damaged file fails anywhere in zip / pickle parsing, with any exception type
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
            found = re.search(r"GLOBAL ([\w.]+)", text)  # torch words it differently across versions
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds a Python object ({found.group(1) if found else 'not a tensor'}) "
                f"that is not unpickled (it could run code): checkpoints are read with torch.load(weights_only=True) "
                f"and may hold only tensors and plain values") from None
        first = text.strip().splitlines()[0] if text.strip() else ""
        previous = path.with_name(PREVIOUS_CHECKPOINT)
        hint = (f"; the checkpoint written before it is {str(previous)!r}: continue from that one with "
                f"--resume {previous}") if path.name == LAST_CHECKPOINT and previous.is_file() else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {first}); the file is truncated or "
            f"corrupt (a copy or write that did not finish?) or not a torch checkpoint{hint}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not an attnzoo training checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); for model weights use an export folder (model.safetensors + config.json)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
    return state


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume auto`` continues from in `output_dir`, or None when there is none."""
    path = Path(output_dir) / LAST_CHECKPOINT
    return path if path.is_file() else None


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
