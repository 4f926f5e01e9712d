"""How the official trainers save their checkpoints, built around a given state dict: what the tests of the safe
loader (tests/test_safe_load.py) and of ``pretrained=True`` (tests/test_pretrained_loopback.py, fed by each family's
``official_checkpoint`` in tests/models/test_<family>.py) read.

Several containers pickle the trainer's configuration beside the weights: Swin's ``save_checkpoint`` a yacs
``CfgNode`` (LITv2 and the Agent-* models train with Swin's code), DeiT-style and timm trainers an argparse
``Namespace``. :func:`save_official` writes them the way the official file holds them, with a stand-in ``CfgNode``
registered under ``yacs.config`` only while writing (yacs is not a dependency).
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["CONTAINERS", "CfgNode", "save_official", "yacs_config"]


class CfgNode(dict):
    """What yacs' CfgNode pickles like: a dict subclass with private flags in its __dict__."""

    def __init__(self, d=None):
        super().__init__(d or {})
        self.__dict__["__immutable__"] = False
        self.__dict__["__deprecated_keys__"] = set()


class _FakeModule:
    """Registers classes under an official module name (e.g. yacs.config) only while a test writes a file."""

    def __init__(self, name: str, **classes):
        self.name, self.classes = name, classes

    def __enter__(self):
        parts = self.name.split(".")
        self.added = []
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            if mod_name not in sys.modules:
                sys.modules[mod_name] = types.ModuleType(mod_name)
                self.added.append(mod_name)
        for cls_name, cls in self.classes.items():
            cls.__module__, cls.__qualname__ = self.name, cls_name
            setattr(sys.modules[self.name], cls_name, cls)
        return self

    def __exit__(self, *exc):
        for mod_name in self.added:
            del sys.modules[mod_name]


def yacs_config() -> CfgNode:
    return CfgNode({"MODEL": CfgNode({"TYPE": "litv2", "DROP_PATH_RATE": 0.2}), "TAG": "default",
                    "OUTPUT": "output/x", "SEEDS": [0, 1]})


# container name -> the official file's object around a state dict `sd`
CONTAINERS: dict[str, Callable[[dict], Any]] = {
    # Swin's save_checkpoint (LITv2, Agent-*): optimizer and scheduler state, the pickled yacs config
    "swin_yacs": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                             "lr_scheduler": {"last_epoch": 3}, "max_accuracy": 82.0, "epoch": 299,
                             "config": yacs_config()},
    # DeiT-style main.py (RAVLT): EMA weights and the pickled argparse Namespace
    "deit_namespace": lambda sd: {"model": sd, "model_ema": sd, "epoch": 299,
                                  "args": argparse.Namespace(model="ravlt_t", lr=1e-3, input_size=224,
                                                             output_dir="out")},
    # timm's CheckpointSaver (DaViT's original files)
    "timm_namespace": lambda sd: {"state_dict": sd, "arch": "davit_tiny", "epoch": 300,
                                  "args": argparse.Namespace(model="davit_tiny", smoothing=0.1)},
    # EMOv2's trainer: the weights under 'net', its EMA under 'net_E' (None when EMA was off)
    "emo_net": lambda sd: {"net": sd, "net_E": None, "optimizer": {}, "epoch": 299},
    # BasicSR's save_network (HAT): 'params' and the EMA 'params_ema' that the official test configs load
    "basicsr": lambda sd: {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
    # a flat state dict (NAT / DiNAT release files, BiFormer's {'model'} aside)
    "flat": lambda sd: sd,
    "model": lambda sd: {"model": sd},
}


def save_official(obj: Any, path: Path, legacy: bool = False) -> None:
    """``torch.save`` as the official trainer's process would (yacs' CfgNode importable while pickling)."""
    with _FakeModule("yacs.config", CfgNode=CfgNode):
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
