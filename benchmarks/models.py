"""Model benchmarks: a timm model per ops backend (and an optional baseline model), same weights, same input.

Models are built only through ``timm.create_model`` (after ``import zoo``); every backend in ``backends`` runs the
same weights (``ATTNZOO_BACKEND`` set while it is built, compiled and run). ``baseline_model`` adds a model of the
same architecture and state-dict layout (e.g. timm's ``davit_tiny`` for ``zoo_davit_tiny``), loaded with the same
weights; it is the numerical baseline when given, otherwise the first backend is. ``fwd``: eval mode,
``torch.no_grad``. ``fwd+bwd``: train mode, forward, ``loss = mean(output^2)`` in fp32, backward (no optimizer
step). ``dtype`` bf16 / fp16 runs under ``torch.autocast`` (weights stay fp32, as in mixed-precision training).
Reported: median step time, images/s, peak memory (GPU: ``torch.cuda.max_memory_allocated`` during one step,
weights and inputs included), speedup against the first row (the baseline model when given, else the first
backend).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Sequence

import torch

from benchmarks.harness import (
    Timer,
    check_cell,
    dtype_name,
    fmt,
    measured_cell,
    notes,
    rel_err,
    table,
    triton_skip_reason,
)
from ops import use_backend

__all__ = ["MODEL_COLUMNS", "MODEL_TOLERANCE", "bench_model", "format_model_rows"]

MODEL_TOLERANCE = {torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 6e-2}

MODEL_COLUMNS = (
    "model", "impl", "img_size", "batch", "dtype", "channels_last", "compile", "status", "error", "reason",
    "fwd_ms", "fwd_img_s", "fwd_speedup", "fwd_peak_mib", "fwdbwd_ms", "fwdbwd_img_s", "fwdbwd_speedup",
    "fwdbwd_peak_mib",
)


def bench_model(name: str, *, backends: Sequence[str], baseline_model: str | None, img_size: int | None,
                batch: int, device: torch.device, dtype: torch.dtype, channels_last: bool, compile: bool,
                modes: Sequence[str], warmup: int, iters: int, allow_interpret: bool = False, seed: int = 0,
                log=print) -> list[dict[str, Any]]:
    """Time `name` (built through timm.create_model) on every backend, plus the optional baseline model."""
    import timm

    import zoo  # noqa: F401  (registers the zoo's models)

    dname = dtype_name(dtype)
    timer = Timer(device, warmup, iters, flush_l2=False)
    tol = MODEL_TOLERANCE[dtype]

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(seed)
    with use_backend("reference"):
        first = timm.create_model(name, pretrained=False)
    state = first.state_dict()
    size = img_size or first.pretrained_cfg["input_size"][-1]
    in_chans = first.pretrained_cfg["input_size"][0]
    del first
    x = torch.randn(batch, in_chans, size, size, device=device).contiguous(memory_format=memory_format)

    runs: list[tuple[str, str, str | None]] = []  # (label, model name, backend)
    if baseline_model:
        runs.append((f"baseline:{baseline_model}", baseline_model, None))
    runs += [(b, name, b) for b in backends]
    rows, ref = [], None
    first_ms: dict[str, float] = {}  # per mode, the first run's time: speedups are relative to it
    for label, model_name, backend in runs:
        row = dict.fromkeys(MODEL_COLUMNS)
        row.update(model=name, impl=label, img_size=size, batch=batch, dtype=dname, channels_last=channels_last,
                   compile=compile, status="ok")
        rows.append(row)
        if backend == "triton" and (reason := triton_skip_reason(device, allow_interpret)):
            row.update(status="skipped", reason=reason)
            continue
        try:
            with use_backend(backend):
                model = timm.create_model(model_name, pretrained=False)
                try:
                    model.load_state_dict(state)
                except RuntimeError as e:
                    raise ValueError(f"--baseline-model {model_name!r} does not take {name!r}'s state dict "
                                     f"({str(e).splitlines()[0]})") from None
                model = model.to(device=device, memory_format=memory_format)
                if compile:
                    torch._dynamo.reset()  # the backend is read at trace time: no graph reuse across backends
                run = torch.compile(model) if compile else model

                def fwd():
                    with torch.no_grad(), autocast():
                        return run(x)

                def fwdbwd():
                    with autocast():
                        out = run(x)
                    loss = out.float().square().mean()
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                    return loss.detach()

                model.eval()
                out = fwd().float()
                if ref is None:
                    ref, row["error"] = out, 0.0
                else:
                    row["error"] = rel_err(out, ref)
                    if not row["error"] <= tol:
                        row["status"] = "MISMATCH"
                        row["reason"] = f"relative error of the logits {row['error']:.3g} > tolerance {tol:g}"
                        log(f"!!! MISMATCH: {name} {label}: {row['reason']}", file=sys.stderr)
                del out
                for mode in modes:
                    model.train(mode == "fwdbwd")
                    step = fwd if mode == "fwd" else fwdbwd
                    ms = timer.median_ms(step)
                    row[f"{mode}_ms"] = ms
                    row[f"{mode}_img_s"] = batch / ms * 1e3
                    first_ms.setdefault(mode, ms)
                    row[f"{mode}_speedup"] = first_ms[mode] / ms
                    row[f"{mode}_peak_mib"] = timer.peak_mib(step, absolute=True)
            model = run = None
        except Exception as e:
            row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
            log(f"!!! ERROR: {name} {label}: {row['reason']}", file=sys.stderr)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_model_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    rows_table = table(
        ["model", "impl", "check (rel err)", "batch", "img", "dtype", "fwd ms", "fwd img/s", "fwd speedup",
         "fwd peak MiB", "f+b ms", "f+b img/s", "f+b speedup", "f+b peak MiB"],
        [[r["model"], r["impl"], check_cell(r), str(r["batch"]), str(r["img_size"]), r["dtype"]]
         + [cell for mode in ("fwd", "fwdbwd") for cell in (
             fmt(r[f"{mode}_ms"], "ms"), fmt(r[f"{mode}_img_s"], "rate"), fmt(r[f"{mode}_speedup"], "x"),
             measured_cell(r, f"{mode}_peak_mib", mode, "mib"))]
         for r in rows],
        markdown,
    )
    return "\n".join([rows_table, *notes(rows)])
