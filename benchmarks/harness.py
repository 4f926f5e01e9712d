"""What every benchmark shares: the timer, the environment header of a JSON record, the roofline, the numerical
check and the tables.

Timing (:class:`Timer`): ``warmup`` untimed calls, then ``iters`` timed calls. GPU: CUDA events around each call,
L2 flushed before each when asked (a 256 MB buffer zeroed outside the timed region), so that small problems are not
timed out of L2 against an HBM roofline. CPU: ``time.perf_counter``. Memory (GPU only): the peak of
``torch.cuda.max_memory_allocated`` during one call, above what was allocated before it (or absolute); the CPU has
no allocator statistics, so memory is None there rather than guessed.

Roofline: ``floor = max(FLOPs / peak FLOP rate, bytes / bandwidth)`` with the cost formulas of each op's
``ops/<op>/official.py`` and the device's peak rates from :data:`DEVICE_PEAKS` (dense tensor-core rate for
bf16 / fp16, the non-tensor rate for fp32, which is what IEEE fp32 kernels get); the reported fraction is
``floor / measured``. Explicit peaks override the table; on the CPU, or a GPU not in the table, the roofline is
n/a unless both are given.

Every JSON record starts from :func:`environment` (device, versions, date, commit) and is written by
:func:`write_json`.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "DEVICE_PEAKS",
    "DTYPES",
    "ROOT",
    "BenchInputs",
    "DevicePeak",
    "Measurement",
    "OpBench",
    "Roofline",
    "Timer",
    "device_peak",
    "environment",
    "packed_qkv",
    "rel_err",
    "roofline",
    "run_meta",
    "write_json",
]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_L2_FLUSH_BYTES = 256 * 1024 * 1024  # well above any GPU's L2 (H100: 50 MB)


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


# --------------------------------------------------------------------------------------------------------------
# Device peaks and the roofline
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DevicePeak:
    """Datasheet peaks of one GPU: dense TFLOP/s per dtype and DRAM bandwidth in GB/s."""

    name: str
    match: tuple[str, ...]  # lower-case substrings that must all occur in torch.cuda.get_device_name()
    tflops: dict[str, float]
    gbs: float


# NVIDIA datasheets, dense (no sparsity). fp32 is the non-tensor-core rate; tf32 is listed for reference.
# Order matters: the first entry whose substrings all match wins.
DEVICE_PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("H200", ("h200",), dict(bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0), 4800.0),
    DevicePeak("H100 PCIe", ("h100", "pcie"), dict(bf16=756.0, fp16=756.0, tf32=378.0, fp32=51.0), 2000.0),
    DevicePeak("H100 SXM", ("h100",), dict(bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0), 3350.0),
    DevicePeak("A100 80GB", ("a100", "80gb"), dict(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5), 2039.0),
    DevicePeak("A100 40GB", ("a100",), dict(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5), 1555.0),
)


def device_peak(device_name: str) -> DevicePeak | None:
    name = device_name.lower()
    return next((p for p in DEVICE_PEAKS if all(m in name for m in p.match)), None)


@dataclass(frozen=True)
class Roofline:
    tflops: float | None
    gbs: float | None
    source: str

    @property
    def known(self) -> bool:
        return self.tflops is not None and self.gbs is not None

    def floor_ms(self, flops: int, nbytes: int) -> float | None:
        if not self.known:
            return None
        return max(flops / (self.tflops * 1e12), nbytes / (self.gbs * 1e9)) * 1e3


def roofline(device: torch.device, dtype_name: str, peak_tflops: float | None, peak_gbs: float | None) -> Roofline:
    """The device's peaks (datasheet, overridden by the given ones), or n/a with the reason."""
    peak = device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    tflops = peak_tflops if peak_tflops is not None else (peak.tflops[dtype_name] if peak else None)
    gbs = peak_gbs if peak_gbs is not None else (peak.gbs if peak else None)
    given = [s for s, v in (("--peak-tflops", peak_tflops), ("--peak-gbs", peak_gbs)) if v is not None]
    if tflops is None or gbs is None:
        what = "the CPU" if device.type == "cpu" else f"{torch.cuda.get_device_name(device)!r} (not in DEVICE_PEAKS)"
        source = f"n/a: no peak rates for {what}; pass --peak-tflops and --peak-gbs"
        return Roofline(None, None, source)
    source = f"{peak.name} datasheet ({dtype_name})" if peak else "command line"
    if given and peak:
        source += f", overridden by {' and '.join(given)}"
    return Roofline(tflops, gbs, source)


# --------------------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Measurement:
    """Per-call times of the timed calls (ms), the warm-up's wall time (s) and, on CUDA, the peak memory allocated
    during the timed calls (MiB, weights and inputs included)."""

    times_ms: list[float]
    warmup_s: float
    peak_mib: float | None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def total_s(self) -> float:
        return sum(self.times_ms) / 1e3


class Timer:
    """``warmup`` untimed calls, then ``iters`` timed ones (module docstring)."""

    def __init__(self, device: torch.device, warmup: int, iters: int, flush_l2: bool = False):
        self.device, self.warmup, self.iters = device, warmup, iters
        self.cuda = device.type == "cuda"
        self.flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if self.cuda and flush_l2 else None

    def measure(self, fn: Callable[[], Any]) -> Measurement:
        t_warm = time.perf_counter()
        for _ in range(self.warmup):
            fn()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        warmup_s = time.perf_counter() - t_warm
        if self.cuda:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.iters)]
            for start, end in events:
                if self.flush is not None:
                    self.flush.zero_()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
            times = [start.elapsed_time(end) for start, end in events]
            peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            times = []
            for _ in range(self.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            peak = None
        return Measurement(times, warmup_s, peak)

    def median_ms(self, fn: Callable[[], Any]) -> float:
        return self.measure(fn).median_ms

    def peak_mib(self, fn: Callable[[], Any], absolute: bool = False) -> float | None:
        """Peak allocated memory during one `fn()`, above what was allocated before it (or absolute), in MiB."""
        if not self.cuda:
            return None
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = 0 if absolute else torch.cuda.memory_allocated(self.device)
        out = fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        del out
        return peak / 2 ** 20


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``||x - ref|| / ||ref||`` in fp64 (``||x - ref||`` when ``ref`` is 0; inf on a shape mismatch)."""
    x, ref = x.detach().double(), ref.detach().double()
    if x.shape != ref.shape:
        return math.inf
    denom = ref.norm().item()
    err = (x - ref).norm().item()
    return err / denom if denom > 0 else err


# --------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict[str, Any]:
    """What a committed result needs to be read later: device, versions, date, commit."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import timm

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=ROOT).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
        cpu_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton_version,
        timm=timm.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        git_commit=commit,
    )


def run_meta(device: torch.device, argv: Sequence[str] | None, **fields: Any) -> dict[str, Any]:
    """The ``meta`` of a run's record: :func:`environment`, the command line's arguments, then `fields`."""
    return dict(environment(device), argv=list(argv) if argv is not None else sys.argv[1:], **fields)


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Write one run's record (``meta`` from :func:`environment` first) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Op benchmarks: what one op module registers
# --------------------------------------------------------------------------------------------------------------

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
    """What the harness needs to benchmark one op (one module of :mod:`benchmarks.ops` defines ``BENCH``).

    name: the ``--op`` name. presets: ``{preset name: [case, ...]}`` (a CPU-sized ``tiny`` among them).
    candidates: ``{name: fn(inputs, case)}``, ``official`` first (the baseline of the check and the speedups).
    make_inputs: ``fn(case, device, dtype, grad) -> BenchInputs``. case_type: the case dataclass (``.label``,
    ``.cost(dtype) -> OpCost``); ``--shape`` passes ``shape_fields`` (comma-separated names of its leading int
    fields) to it positionally, or ``shape_case(dims, args)`` builds the case when the op takes more options.
    check_case: optional ``fn(case) -> error message or None`` for ``--shape`` cases.
    skip_reasons: per candidate, ``fn(device, allow_interpret, modes) -> reason to skip or None`` (on top of the
    harness's own for ``triton`` / ``flex``); case_skip: ``fn(candidate, case) -> reason or None`` for what a
    candidate cannot run on one case (e.g. NATTEN >= 0.20 and a relative-position bias). unchecked:
    ``{candidate: why it computes another function}``. tolerance: per-dtype relative-error tolerance overriding
    the harness's, or None.
    """

    name: str
    presets: dict[str, list]
    candidates: dict[str, Callable]
    make_inputs: Callable[..., BenchInputs]
    case_type: type
    shape_fields: str
    shape_case: Callable[[list[int], Any], Any] | None = None
    check_case: Callable[[Any], str | None] | None = None
    skip_reasons: dict[str, Callable[..., str | None]] = field(default_factory=dict)
    case_skip: Callable[[str, Any], str | None] | None = None
    unchecked: dict[str, str] = field(default_factory=dict)
    tolerance: dict[torch.dtype, float] | None = None

    def __post_init__(self):
        if next(iter(self.candidates), None) != "official":
            raise ValueError(f"OpBench {self.name}: the first candidate must be 'official', "
                             f"got {list(self.candidates)}")
        if "tiny" not in self.presets:
            raise ValueError(f"OpBench {self.name}: needs a CPU-sized 'tiny' preset, got {list(self.presets)}")
        if "official" in self.unchecked:
            raise ValueError(f"OpBench {self.name}: 'official' is the baseline, it cannot be unchecked")


def packed_qkv(shape: Sequence[int], device, dtype, grad: bool) -> torch.Tensor:
    """A random packed tensor (e.g. ``(B, H, W, 3, heads, D)``) as a model's qkv projection produces it."""
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)


def triton_skip_reason(device: torch.device, allow_interpret: bool, modes: Sequence[str] = ()) -> str | None:
    from ops._backend import triton_available, triton_interpret

    if not triton_available():
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if not allow_interpret:
        return ("needs CUDA; on the CPU it would run in Triton's interpreter, far too slow to time "
                "(pass --allow-interpret to run it anyway)")
    if not triton_interpret():
        # Triton reads the switch when it is imported, which may already have happened (torch imports it for
        # inductor / FlexAttention), so setting it from here is not reliable: ask for it up front.
        return "--allow-interpret needs TRITON_INTERPRET=1 set in the environment before the command starts"
    return None


def flex_skip_reason(device: torch.device, allow_interpret: bool, modes: Sequence[str] = ()) -> str | None:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if device.type == "cuda":
        return None
    if "fwdbwd" in modes:
        return "FlexAttention has no backward on the CPU (NotImplementedError); it needs CUDA"
    if not allow_interpret:
        return ("needs CUDA; on the CPU only its eager, unfused forward runs (pass --allow-interpret with --mode fwd "
                "to run it anyway)")
    return None


# Candidates that cannot run everywhere: name -> fn(device, allow_interpret, modes) -> reason to skip, or None.
SKIP_REASONS: dict[str, Callable[..., str | None]] = {"triton": triton_skip_reason, "flex": flex_skip_reason}


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------

def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.4f}" if value < 1 else f"{value:.2f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "pct":  # small fractions (CPU, loaded machines) keep two significant digits instead of "0.0%"
        return f"{100 * value:.1f}%" if value >= 0.01 else f"{100 * value:.2g}%"
    if kind == "mib":
        return f"{value:.1f}"
    if kind == "rate":
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    if kind == "g":
        return f"{value:.3g}"
    return str(value)


def table(header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt_row(header), "  ".join("-" * w for w in widths), *map(fmt_row, body)])


def measured_cell(row: dict[str, Any], key: str, mode: str, kind: str) -> str:
    """A derived value of a timed mode: 'n/a' when it was timed but the value cannot be had (CPU memory, unknown
    peak rates), '-' when the mode did not run."""
    if row[key] is None:
        return "n/a" if row[f"{mode}_ms"] is not None else "-"
    return fmt(row[key], kind)


def check_cell(row: dict[str, Any]) -> str:
    if row["status"] in ("skipped", "ERROR", "unchecked"):
        return row["status"]
    err = "" if row["error"] is None else f" {row['error']:.1e}"
    return f"{row['status']}{err}"


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per distinct skip / failure reason, after a blank line (none when nothing was said)."""
    said = sorted({f"{r['impl']}: {r['status']}: {r['reason']}" for r in rows if r["reason"]})
    return [""] + said if said else []
