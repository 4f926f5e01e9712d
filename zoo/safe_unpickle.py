"""Read official checkpoints that pickle their training configs, without executing anything from the file.

Official training scripts save more than tensors: Swin-style trainers (LITv2, Agent-*) store the yacs ``CfgNode``
under ``'config'``, timm / DeiT-style trainers (RAVLT, DaViT, Agent-DeiT) an ``argparse.Namespace`` under
``'args'``. ``torch.load(weights_only=True)`` refuses such files, and full unpickling would run whatever the file's
pickle asks for.

This module keeps ``torch.load``'s restricted unpickler (``weights_only=True``: tensors, storages, containers and
plain values only) and maps the *names* of the known config classes to inert stand-ins defined here; the real
classes are never imported or called. Every other global is refused, by name, before anything is unpickled:

========================  =========================================================================================
pickled global            becomes
========================  =========================================================================================
``argparse.Namespace``    :class:`PickledConfig` (its attributes, readable as ``cfg.lr`` / ``vars(cfg)``)
``yacs.config.CfgNode``   a ``collections.OrderedDict`` of its items (the node's private flags land in ``__dict__``)
``easydict.EasyDict``     the same
``pathlib.*Path``         the path as a ``str``
========================  =========================================================================================
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

__all__ = ["PickledConfig", "KNOWN_CONFIG_GLOBALS", "UnsafeCheckpointError", "unsafe_globals", "torch_load_safe"]


class UnsafeCheckpointError(Exception):
    """The file pickles a global that is neither allowed by ``weights_only`` nor a known config class."""

    def __init__(self, path: str | Path, names: list[str]):
        self.path, self.names = str(path), sorted(set(names))
        super().__init__(
            f"checkpoint {self.path!r} refused: it pickles {', '.join(self.names)}, which is neither a tensor nor one "
            f"of the known training-config classes ({', '.join(sorted(KNOWN_CONFIG_GLOBALS))}); nothing from the file "
            f"was run. If you trust the file, re-save only its weights from a trusted environment "
            f"(torch.save(state_dict, ...) or safetensors) and load that")


class PickledConfig:
    """Inert stand-in for a pickled ``argparse.Namespace``: holds the pickled attributes, has no other behaviour."""

    def __init__(self, **attrs: Any):
        self.__dict__.update(attrs)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
            raise TypeError(f"a pickled argparse.Namespace must carry a dict of attributes, got {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"PickledConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickledConfig) and vars(self) == vars(other)


class _MappingConfig:
    """Stand-in for a dict-subclass config (yacs ``CfgNode``, ``EasyDict``): unpickles as a plain ``OrderedDict``.

    Pickle fills a dict subclass with SETITEMS and then restores its instance ``__dict__`` (BUILD); torch's
    restricted unpickler allows both on an ``OrderedDict`` only, so construction returns one."""

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


def _path_standin(*parts: Any) -> str:
    """Stand-in for ``pathlib.Path`` subclasses (pickled as ``PosixPath(*parts)``): the joined string."""
    if not all(isinstance(p, str) for p in parts):
        raise TypeError("a pickled path must be made of strings")
    return str(Path(*parts)) if parts else ""


# pickled name -> inert stand-in (nothing here imports, calls or looks up the original class)
KNOWN_CONFIG_GLOBALS: dict[str, Any] = {
    "argparse.Namespace": PickledConfig,
    "yacs.config.CfgNode": _MappingConfig,
    "easydict.EasyDict": _MappingConfig,
    "pathlib.PosixPath": _path_standin,
    "pathlib.WindowsPath": _path_standin,
    "pathlib.PurePosixPath": _path_standin,
    "pathlib.PureWindowsPath": _path_standin,
}

_SAFE = [(obj, name) for name, obj in KNOWN_CONFIG_GLOBALS.items()]
_REFUSED = re.compile(r"GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+)|unrecognized function ([\w.<> ]+)")


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals a ``torch.save`` zip file pickles that would be refused (statically, nothing is unpickled)."""
    with torch.serialization.safe_globals(_SAFE):
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


def torch_load_safe(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with the known config classes mapped to their stand-ins.

    Raises :class:`UnsafeCheckpointError` naming every other global the file pickles (zip files are scanned before
    anything is unpickled; a legacy non-zip file is refused at its first such global). Other read errors
    propagate as torch raises them."""
    path = str(path)
    zipped = _is_zip(path)
    if zipped:
        names = unsafe_globals(path)
        if names:
            raise UnsafeCheckpointError(path, names)
    try:
        with torch.serialization.safe_globals(_SAFE):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = _REFUSED.search(str(e))
        if m:
            raise UnsafeCheckpointError(path, [next(g for g in m.groups() if g)]) from None
        detail = str(e).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        raise pickle.UnpicklingError(
            f"the restricted unpickler cannot read {path!r}: {detail[0] if detail else type(e).__name__} (not a "
            f"torch.save file of tensors, containers and plain values)") from None


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
