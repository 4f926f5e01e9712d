"""Pluggable op benchmarks: one module per op in this package, merged into :mod:`zoo.engine.benchmark`'s tables.

Each module ``zoo/engine/benchops/<op>.py`` defines a module-level ``BENCH = OpBench(...)`` naming its op, its
case dataclass (``.label`` and ``.cost(dtype) -> OpCost``), presets, candidates and input maker;
:func:`discover` imports every module of the package (names starting with ``_`` are helpers, not ops) and
returns ``{op name: OpBench}``. The modules import nothing from :mod:`zoo.engine.benchmark` (which imports this
package): what they share lives here and in :mod:`zoo.engine.flops`.

A candidate is ``fn(inputs, case) -> output``: the output is one tensor or a tuple of tensors (e.g. HiLo's
Hi-Fi and Lo-Fi outputs), and ``inputs.leaves`` are the tensors gradients are taken with respect to. The
harness checks every candidate against ``official`` (output(s) and every gradient) before timing it; a
candidate listed in ``unchecked`` computes a *different* function on purpose (a reference point, such as full
softmax attention next to a linear attention) and is only checked for shapes, with the stated reason in the
table.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

__all__ = ["BenchInputs", "OpBench", "discover", "elem_size", "packed_qkv"]


@dataclass
class BenchInputs:
    """Inputs of one case: ``leaves`` (gradients are taken w.r.t. them, in this order) and named extras."""

    leaves: list[torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no input {name!r} (has {', '.join(extra) or 'none'})")


@dataclass(frozen=True)
class OpBench:
    """What the harness needs to benchmark one op.

    name: the ``--op`` name. presets: ``{preset name: [case, ...]}`` (a CPU-sized ``tiny`` among them).
    candidates: ``{name: fn(inputs, case)}``, ``official`` first (the baseline of the check and the speedups).
    make_inputs: ``fn(case, device, dtype, grad) -> BenchInputs``. case_type: the case dataclass; ``--shape``
    passes ``shape_fields`` (comma-separated names of its leading int fields) to it positionally.
    check_case: optional ``fn(case) -> error message or None`` for ``--shape`` cases.
    skip_reasons: per candidate, ``fn(device, allow_interpret, modes) -> reason to skip or None`` (on top of the
    harness's own for ``triton`` / ``flex``); case_skip: ``fn(candidate, case) -> reason or None`` for what
    a candidate cannot run on one case (e.g. NATTEN >= 0.20 and a relative-position bias). unchecked: ``{candidate: why it computes another function}``.
    tolerance: per-dtype relative-error tolerance overriding the harness's, or None.
    """

    name: str
    presets: dict[str, list]
    candidates: dict[str, Callable]
    make_inputs: Callable[..., BenchInputs]
    case_type: type
    shape_fields: str
    check_case: Callable[[Any], str | None] | None = None
    skip_reasons: dict[str, Callable[..., str | None]] = field(default_factory=dict)
    case_skip: Callable[[str, Any], str | None] | None = None
    unchecked: dict[str, str] = field(default_factory=dict)
    tolerance: dict[torch.dtype, float] | None = None

    def __post_init__(self):
        if next(iter(self.candidates), None) != "official":
            raise ValueError(f"OpBench {self.name}: the first candidate must be 'official', got {list(self.candidates)}")
        if "tiny" not in self.presets:
            raise ValueError(f"OpBench {self.name}: needs a CPU-sized 'tiny' preset, got {list(self.presets)}")
        if "official" in self.unchecked:
            raise ValueError(f"OpBench {self.name}: 'official' is the baseline, it cannot be unchecked")


def elem_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def packed_qkv(shape: Sequence[int], device, dtype, grad: bool) -> torch.Tensor:
    """A random packed tensor (e.g. ``(B, H, W, 3, heads, D)``) as a model's qkv projection produces it."""
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)


def discover() -> dict[str, OpBench]:
    """``{op: OpBench}`` of every op module in this package, in module-name order."""
    found: dict[str, OpBench] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        bench = getattr(module, "BENCH", None)
        if not isinstance(bench, OpBench):
            raise TypeError(f"{module.__name__}: an op benchmark module must define BENCH = OpBench(...)")
        if bench.name in found:
            raise ValueError(f"{module.__name__}: op {bench.name!r} is defined twice")
        found[bench.name] = bench
    return found
