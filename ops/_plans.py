"""Launch targets and launches of the Triton kernels: what every op's ``launch_plan`` is computed for.

Each op's Triton module has one ``launch_plan(target, dtype, ...)`` that picks its kernels' tiles, ``num_warps``
and ``num_stages`` for a :class:`Target` -- a GPU's compute capability, shared memory per block and SM count, or
the CPU interpreter -- and the wrappers launch every kernel through :func:`launch` with that plan. Keeping the
target explicit is what lets the compile check (:mod:`benchmarks.compile_check`, ``tests/ops/test_compile.py``) run
the wrappers' real planning code for an sm_80 or sm_90 GPU on a machine without one: inside
:func:`compile_target` the wrappers see that GPU as their device's target and :func:`launch` records each launch
(kernel, arguments, constexprs, warps, stages) instead of running it.

Also here, because it is a choice every plan depends on: :func:`fp32_dot_precision`, the ``tl.dot`` input
precision of fp32 operands, which follows ``torch.get_float32_matmul_precision()`` as torch's own matmuls do.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any, Optional

import torch

from ops._backend import triton_interpret

__all__ = [
    "GPU_TARGETS", "INTERPRETER", "KernelPlan", "Launch", "Target", "compile_target", "device_target",
    "dot_options", "exact_fp32", "fp32_dot_precision", "launch",
]


@dataclasses.dataclass(frozen=True)
class Target:
    """What a launch plan is made for. ``arch``: compute capability as ``10 * major + minor`` (80, 86, 89, 90),
    ``None`` for Triton's CPU interpreter; ``smem``: shared memory one block may use (opt-in maximum), bytes;
    ``sms``: number of SMs (grids are sized by it)."""

    arch: Optional[int]
    smem: int
    sms: int

    @property
    def interpret(self) -> bool:
        return self.arch is None


# The interpreter checks no hardware limit and runs programs one after another.
INTERPRETER = Target(None, 1 << 40, 1)

# Shared memory per block (the opt-in maximum Triton may use) and SM counts of the GPUs plans are made for:
# A100 (sm_80, 163 KB), A10 / RTX 30xx (sm_86, 99 KB), L4 / L40 / RTX 40xx (sm_89, 99 KB), H100 (sm_90, 227 KB).
GPU_TARGETS = {
    80: Target(80, 163 * 1024, 108),
    86: Target(86, 99 * 1024, 84),
    89: Target(89, 99 * 1024, 58),
    90: Target(90, 227 * 1024, 132),
}


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """The launch options of one kernel: ``num_warps`` and ``num_stages`` (software-pipelining depth of its
    loops' loads; 1 = no pipelining buffers in shared memory)."""

    num_warps: int = 4
    num_stages: int = 1


@dataclasses.dataclass
class Launch:
    """One kernel launch as :func:`launch` received it (recorded inside :func:`compile_target`)."""

    kernel: Any
    grid: tuple
    args: tuple
    constexprs: dict
    plan: KernelPlan


@dataclasses.dataclass
class _Recording:
    target: Target
    launches: list


_RECORDING: contextvars.ContextVar[Optional[_Recording]] = contextvars.ContextVar("attnzoo_recording", default=None)


@functools.lru_cache(maxsize=None)
def _cuda_target(index: int) -> Target:
    props = torch.cuda.get_device_properties(index)
    smem = getattr(props, "shared_memory_per_block_optin", 0) or GPU_TARGETS.get(
        10 * props.major + props.minor, GPU_TARGETS[86]).smem
    return Target(10 * props.major + props.minor, smem, props.multi_processor_count)


def device_target(device: torch.device) -> Target:
    """The target the kernels for tensors on ``device`` are planned for: the one :func:`compile_target` set, else
    the interpreter's under ``TRITON_INTERPRET=1`` or off CUDA, else the GPU's own."""
    recording = _RECORDING.get()
    if recording is not None:
        return recording.target
    if triton_interpret():
        return INTERPRETER
    if device.type == "cuda":
        return _cuda_target(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER


def launch(kernel, grid, *args, plan: KernelPlan, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)`` with the plan's warps and stages (recorded, not run, inside
    :func:`compile_target`)."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.launches.append(Launch(kernel, tuple(grid), args, constexprs, plan))
        return
    kernel[grid](*args, num_warps=plan.num_warps, num_stages=plan.num_stages, **constexprs)


@contextlib.contextmanager
def compile_target(arch: int) -> Iterator[list[Launch]]:
    """Plan for GPU ``arch`` (a key of :data:`GPU_TARGETS`) whatever the tensors' device, and record launches
    instead of running them; yields the list they are appended to. The wrappers can then run on meta tensors."""
    recording = _Recording(GPU_TARGETS[arch], [])
    token = _RECORDING.set(recording)
    try:
        yield recording.launches
    finally:
        _RECORDING.reset(token)


def fp32_dot_precision() -> str:
    """``tl.dot`` input precision for fp32 operands: ``"tf32"`` when torch allows TF32 matmuls
    (``torch.set_float32_matmul_precision("high")`` or ``"medium"``), ``"ieee"`` (exact fp32) for the default
    ``"highest"`` -- what ``torch.matmul`` does with the same setting."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def exact_fp32(dtype: torch.dtype) -> bool:
    """fp32 inputs with IEEE dots: ``tl.dot`` then runs on the FMA units with its operand tiles spread over the
    registers, several times the register footprint of a tensor-core dot -- such plans need smaller tiles."""
    return dtype == torch.float32 and fp32_dot_precision() == "ieee"


def dot_options(dtype: torch.dtype, target: Target) -> tuple[bool, str]:
    """The kernels' ``(UPCAST_DOT, DOT_PRECISION)`` constexprs for inputs of ``dtype`` on ``target``.

    UPCAST_DOT: bf16 in the interpreter (see :func:`ops._triton_utils.dot`). DOT_PRECISION: for fp32 inputs
    :func:`fp32_dot_precision`; for 16-bit inputs ``"tf32"``, which only concerns the fp32 operands a kernel forms
    itself (16-bit operands ignore it).
    """
    precision = fp32_dot_precision() if dtype == torch.float32 else "tf32"
    return dtype == torch.bfloat16 and target.interpret, precision
