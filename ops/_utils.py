"""Small pieces every primitive's reference path shares."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["no_autocast"]


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast around a reference body, so its explicit fp32 math is not cast back to fp16/bf16.

    The Triton kernels accumulate in fp32 whatever autocast says; the reference must compute the same thing.
    """
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()  # meta / other devices: no autocast state to override
