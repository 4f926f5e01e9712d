"""Op benchmarks: one module per op in this package, and the run that checks and times them.

Each module ``benchmarks/ops/<op>.py`` defines ``BENCH = OpBench(...)`` (:class:`benchmarks.harness.OpBench`):
its case dataclass (``.label`` and ``.cost(dtype)``, from the op's ``ops/<op>/official.py``), presets, input maker
and candidates. :func:`discover` imports every module of the package and fills the registry (:data:`OP_BENCHES`,
:data:`PRESETS`, :data:`OP_CANDIDATES`, :data:`OPS`); adding an op is adding a module.

Every case runs, in one process and on the same inputs, the op computed by each candidate:

* ``official`` -- the way the official code computes it, ``ops/<op>/official.py`` (the baseline of the check
  and of the speedups);
* the best general alternative -- ``sdpa`` (``torch.nn.functional.scaled_dot_product_attention`` on the same
  partition, biases and masks folded into one float ``attn_mask``), ``flex`` (FlexAttention with a block mask;
  compiled on CUDA, skipped on the CPU, which has no FlexAttention backward), or an optional package (``natten``,
  ``fbla``), as each module documents;
* ``reference`` / ``triton`` -- the ``ops`` function with that ``backend=``. ``triton`` needs CUDA; on the CPU it
  is skipped (Triton's interpreter is orders of magnitude too slow to time) unless ``--allow-interpret``.

Inputs are laid out as a model produces them: one packed ``qkv`` tensor whose ``unbind`` gives q, k, v, and
gradients are taken with respect to it (and the bias tables), so every candidate pays for its own layout changes.

Before anything is timed, every candidate's output(s) and gradients are compared with ``official``: the error is
``||x - x_official|| / ||x_official||`` (worst of outputs and gradients), checked against a per-dtype tolerance.
A mismatch or an error is printed loudly, marked in the table and JSON, and makes the exit status 1 (timings are
still reported, flagged). A candidate listed in its module's ``unchecked`` computes a *different* function on
purpose (a timing reference point) and is compared on shapes only.

Measured per candidate: ``fwd`` (under ``torch.no_grad``) and ``fwd+bwd`` (forward, then ``torch.autograd.grad``
of a fixed random output gradient), the median over ``--iters`` runs after ``--warmup`` runs, L2 flushed on the
GPU (:class:`benchmarks.harness.Timer`); speedup = official's median / the candidate's; memory: what the candidate
needs above its inputs; roofline fraction: ``floor / measured`` (``fwd+bwd`` floor = fwd floor + bwd floor).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any, Sequence

import torch

from benchmarks.harness import (
    SKIP_REASONS,
    OpBench,
    Roofline,
    Timer,
    check_cell,
    dtype_name,
    fmt,
    measured_cell,
    notes,
    rel_err,
    table,
)

__all__ = ["OP_BENCHES", "OP_CANDIDATES", "OP_COLUMNS", "OP_TOLERANCE", "OPS", "PRESETS", "bench_op", "discover",
           "format_op_rows"]

# Relative L2 error (output and every gradient) above which a candidate does not compute the baseline's function.
# bf16 / fp16: the official formulation itself rounds the scores and probabilities to the input dtype.
OP_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}

OP_COLUMNS = (
    "op", "case", "dtype", "impl", "status", "error", "reason",
    "fwd_ms", "fwd_speedup", "fwd_roofline", "fwd_mem_mib",
    "fwdbwd_ms", "fwdbwd_speedup", "fwdbwd_roofline", "fwdbwd_mem_mib",
    "flops_fwd", "flops_bwd", "bytes_fwd", "bytes_bwd", "floor_fwd_ms", "floor_fwdbwd_ms",
)


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


OP_BENCHES: dict[str, OpBench] = discover()
PRESETS: dict[str, dict[str, list]] = {op: bench.presets for op, bench in OP_BENCHES.items()}
# Per op: candidate name -> fn(inputs, case) -> output(s). The run reads it at call time (tests swap entries).
OP_CANDIDATES: dict[str, dict[str, Any]] = {op: bench.candidates for op, bench in OP_BENCHES.items()}
OPS = tuple(OP_BENCHES)


def _outputs(out) -> tuple[torch.Tensor, ...]:
    """A candidate's output: one tensor, or a tuple of them (ops with several outputs)."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _op_step(fn, inp, case, grad_out):
    """One run: forward (no_grad) when grad_out is None, else forward + gradients of the leaves."""
    if grad_out is None:
        with torch.no_grad():
            return fn(inp, case)
    out = fn(inp, case)
    return torch.autograd.grad(out, inp.leaves, grad_out)


def bench_op(op: str, cases: Sequence, *, device: torch.device, dtype: torch.dtype, candidates: Sequence[str],
             modes: Sequence[str], warmup: int, iters: int, roofline: Roofline, allow_interpret: bool = False,
             compile: bool = False, flush_l2: bool = True, seed: int = 0, log=print) -> list[dict[str, Any]]:
    """Check, then time every candidate of `op` on every case; one result dict (OP_COLUMNS) per pair."""
    bench = OP_BENCHES[op]
    impls = OP_CANDIDATES[op]
    names = ["official"] + [c for c in candidates if c != "official"]
    skip_fns = {**SKIP_REASONS, **bench.skip_reasons}
    skip = {n: skip_fns[n](device, allow_interpret, modes) for n in names if n in skip_fns}
    timer = Timer(device, warmup, iters, flush_l2)
    tol = (bench.tolerance or OP_TOLERANCE)[dtype]
    dname = dtype_name(dtype)
    rows = []
    for case in cases:
        cost = case.cost(dtype)
        floor_fwd = roofline.floor_ms(cost.flops_fwd, cost.bytes_fwd)
        floor_fb = roofline.floor_ms(cost.flops_fwdbwd, cost.bytes_fwdbwd)
        torch.manual_seed(seed)
        inp = bench.make_inputs(case, device, dtype, grad="fwdbwd" in modes)
        fns = {name: impls[name] for name in names}
        if compile:
            fns = {name: torch.compile(fn) for name, fn in fns.items()}
        ref = None
        grad_out = None
        official_ms: dict[str, float] = {}
        for name in names:
            row = dict.fromkeys(OP_COLUMNS)
            row.update(op=op, case=case.label, dtype=dname, impl=name, status="ok",
                       flops_fwd=cost.flops_fwd, flops_bwd=cost.flops_bwd, bytes_fwd=cost.bytes_fwd,
                       bytes_bwd=cost.bytes_bwd, floor_fwd_ms=floor_fwd, floor_fwdbwd_ms=floor_fb)
            rows.append(row)
            if skip.get(name):
                row.update(status="skipped", reason=skip[name])
                continue
            if bench.case_skip and (reason := bench.case_skip(name, case)):
                row.update(status="skipped", reason=reason)
                continue
            if name != "official" and ref is None:
                row.update(status="skipped", reason="the official baseline failed: nothing to check against")
                continue
            fn = fns[name]
            try:
                # Check before timing: output and every gradient against the official formulation.
                with torch.enable_grad():
                    out = fn(inp, case)
                    grads = ()
                    if "fwdbwd" in modes:
                        if grad_out is None:
                            grad_out = (torch.randn_like(out) if isinstance(out, torch.Tensor)
                                        else tuple(torch.randn_like(o) for o in out))
                        grads = torch.autograd.grad(out, inp.leaves, grad_out)
                results = [o.detach() for o in _outputs(out)] + list(grads)
                if ref is None:
                    ref = results
                    row["error"] = 0.0
                elif name in bench.unchecked:
                    # another function on purpose (a reference point): only the shapes can be compared
                    shapes, want = [tuple(x.shape) for x in results], [tuple(r.shape) for r in ref]
                    if shapes != want:
                        raise ValueError(f"output / gradient shapes {shapes} differ from official's {want}")
                    row.update(status="unchecked", reason=bench.unchecked[name])
                else:
                    row["error"] = max(rel_err(x, r) for x, r in zip(results, ref))
                    if not row["error"] <= tol:
                        row["status"] = "MISMATCH"
                        row["reason"] = f"relative error {row['error']:.3g} > tolerance {tol:g} against official"
                        log(f"!!! MISMATCH: {op} {case.label} {dname} impl={name}: {row['reason']} "
                            f"(timings below are flagged)", file=sys.stderr)
                del out, grads, results
                for mode in modes:
                    g = grad_out if mode == "fwdbwd" else None
                    ms = timer.median_ms(lambda: _op_step(fn, inp, case, g))
                    row[f"{mode}_ms"] = ms
                    row[f"{mode}_mem_mib"] = timer.peak_mib(lambda: _op_step(fn, inp, case, g))
                    floor = floor_fwd if mode == "fwd" else floor_fb
                    row[f"{mode}_roofline"] = floor / ms if floor is not None else None
                    if name == "official":
                        official_ms[mode] = ms
                    if mode in official_ms:
                        row[f"{mode}_speedup"] = official_ms[mode] / ms
            except Exception as e:  # one broken candidate must not hide the others' numbers
                row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
                log(f"!!! ERROR: {op} {case.label} {dname} impl={name}: {row['reason']}", file=sys.stderr)
        inp = ref = grad_out = None  # free this case's tensors before the next one's
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_op_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cases: dict[str, dict[str, Any]] = {}
    for r in rows:
        cases.setdefault(r["case"], r)
    case_table = table(
        ["case", "dtype", "GFLOP fwd", "MB fwd", "floor fwd ms", "GFLOP f+b", "MB f+b", "floor f+b ms"],
        [[c, r["dtype"], fmt(r["flops_fwd"] / 1e9, "g"), fmt(r["bytes_fwd"] / 1e6, "g"),
          fmt(r["floor_fwd_ms"], "ms") if r["floor_fwd_ms"] is not None else "n/a",
          fmt((r["flops_fwd"] + r["flops_bwd"]) / 1e9, "g"), fmt((r["bytes_fwd"] + r["bytes_bwd"]) / 1e6, "g"),
          fmt(r["floor_fwdbwd_ms"], "ms") if r["floor_fwdbwd_ms"] is not None else "n/a"]
         for c, r in cases.items()],
        markdown,
    )
    result_table = table(
        ["case", "impl", "check (rel err)", "fwd ms", "fwd speedup", "fwd roofline", "fwd MiB",
         "f+b ms", "f+b speedup", "f+b roofline", "f+b MiB"],
        [[r["case"], r["impl"], check_cell(r)]
         + [cell for mode in ("fwd", "fwdbwd") for cell in (
             fmt(r[f"{mode}_ms"], "ms"), fmt(r[f"{mode}_speedup"], "x"),
             measured_cell(r, f"{mode}_roofline", mode, "pct"), measured_cell(r, f"{mode}_mem_mib", mode, "mib"))]
         for r in rows],
        markdown,
    )
    return "\n".join([case_table, "", result_table, *notes(rows)])
