"""The prepared GPU run: everything a lent GPU should measure, in one command under 8 minutes on one H100.

    python -m benchmarks.gpu [--out-dir benchmarks/results] [--budget 450]
    python -m benchmarks.gpu --dry-run [--out-dir DIR]      # CPU: the whole plan on tiny shapes, 1 iteration

Four sections, run in this order, each with its share of the time budget (:data:`SECTIONS`):

1. **tests** -- ``pytest -m gpu`` (the ``gpu``-marked tests: the ops' kernels at model sizes, the engine's GPU
   steps), in a subprocess killed at the section's deadline. The dry run only collects them (they skip without
   CUDA).
2. **ops** -- every op's forward + backward time and peak memory (:func:`benchmarks.ops.bench_op`, its checks
   first) at the model-size presets of :data:`OP_PRESETS`, bf16, against the official formulation (``official``,
   the baseline) and the general alternatives each op module registers (``sdpa`` on the partition, ``flex``
   FlexAttention with the op's mask / score_mod, ``natten`` / ``fbla`` where installed); the zoo's ``triton``.
   The ``reference`` backend is left out (a CPU path; ``python eval.py bench`` times it).
3. **models** -- each classification family's small model, one training step (forward, loss, backward, AdamW)
   with :func:`benchmarks.train_throughput.measure` in bf16 autocast, eager then ``torch.compile``: all eager rows
   first, then the compiled ones while the section's time lasts (a compile starts only with :data:`COMPILE_MIN_S`
   left; inductor takes tens of seconds per model, so one run compiles a few models, and ``--budget`` buys more).
   HAT (super-resolution) has no classification step there and is not in this section.
4. **memory** -- the device-independent counts of :mod:`benchmarks.memory` (meta device) next to what the GPU's
   allocator measures for the same fp32 training step of a few models (:data:`MEMORY_CHECK`), official formulation
   and zoo: ``torch.cuda.max_memory_allocated`` during the step above what was allocated before it (weights, input
   and the gradients of a warm-up step, which the step accumulates into). The allocator rounds every block up
   (512 B) and cuBLAS keeps workspaces, so measured >= counted is expected; a large gap means the count misses
   something. The dry run counts only (the CPU has no allocator statistics).

Each section stops starting new items at its deadline and lists what it skipped; an item that started runs to
its end, so the per-item sizes are chosen to keep the whole run under the budget. The results go to
``<out-dir>/<date>-<device>.md`` and a ``.json`` record next to it (:func:`benchmarks.harness.run_meta` header).
Exit status 1 when a gpu test failed, an op candidate mismatched the official formulation or failed, or a model
failed (the markdown says which); 0 otherwise.

``--dry-run`` (CPU): the same plan on the ``tiny`` op presets in fp32 with 1 timed iteration and no warm-up (plus
the ``reference`` candidate), one model (:data:`DRY_RUN_MODELS`) at 64 x 64 with batch 2 and 1 step, and
``torch.compile`` with the ``eager`` backend (Dynamo traces the model, nothing is code-generated): the point is
that every section executes and the markdown is written, not a timing. The ``triton`` candidate is skipped with
its reason unless ``--allow-interpret`` is given and ``TRITON_INTERPRET=1`` was set before the command started
(Triton's interpreter: minutes for the tiny presets on two cores). Nothing a dry run writes is a result.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import ROOT, roofline, run_meta, write_json

__all__ = ["COMPILE_MIN_S", "DRY_RUN_MODELS", "MEMORY_CHECK", "MODEL_FAMILIES", "OP_PRESETS", "SECTIONS", "Budget",
           "failures", "main", "plan", "run"]

# Seconds of the default budget each section may start work in (450 s; an item started before its deadline runs
# to its end: at most one op case or one eager step, as a compiled model starts only with COMPILE_MIN_S left, so
# the whole run stays under 8 minutes with the imports).
SECTIONS = {"tests": 140, "ops": 140, "models": 150, "memory": 20}
COMPILE_MIN_S = 60.0
# (model, side) pairs whose counted and measured step memory the memory section compares (benchmarks.memory names)
MEMORY_CHECK = (("nat_mini", 224), ("biformer_tiny", 224), ("agent_deit_t", 224))

# Per op, the model-size presets of benchmarks/ops/<op>.py (``python eval.py bench --list``) the run measures.
OP_PRESETS = {
    "agent_attention": ("agent_swin_t_224",),
    "bilevel_routing_attention": ("biformer_s_224",),
    "channel_attention": ("davit_t_224",),
    "hilo_attention": ("litv2_s_224",),
    "neighborhood_attention_2d": ("dinat_t_224",),
    "overlapping_window_attention": ("hat_64",),
    "rala": ("ravlt_s_224",),
    "window_attention": ("davit_t_224", "hat_ws16"),
    "window_grid_attention": ("emo2_5m_224",),
}

# The small model of every classification family (benchmarks.memory.FAMILIES without HAT), trained at 224.
MODEL_FAMILIES = ("agent_swin_t", "agent_cswin_t", "agent_deit_t", "agent_pvt_t", "biformer_tiny", "nat_mini",
                  "dinat_mini", "vitrpb_small", "zoo_davit_tiny", "emo2_1m", "litv2_small", "ravlt_t")
MODEL_CONFIGS = ("bf16", "bf16_compile")
# The dry run's models: the smallest one only (building and stepping each full model costs seconds to tens of
# seconds on a CPU; every model's training step has its own tests).
DRY_RUN_MODELS = ("emo2_1m",)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one run: the real one on a GPU, or the CPU dry run."""

    device: torch.device
    dry_run: bool
    op_dtype: torch.dtype = torch.bfloat16
    op_warmup: int = 3
    op_iters: int = 10
    model_batch: int = 64
    model_img: int = 224
    model_steps: int = 10
    model_warmup: int = 3

    interpret: bool = False

    @classmethod
    def for_run(cls, dry_run: bool, interpret: bool = False) -> Settings:
        if dry_run:
            return cls(torch.device("cpu"), True, op_dtype=torch.float32, op_warmup=0, op_iters=1, model_batch=2,
                       model_img=64, model_steps=1, model_warmup=0, interpret=interpret)
        return cls(torch.device("cuda"), False)


class Budget:
    """A section's deadline: ``seconds`` from its start, never past the run's own deadline."""

    def __init__(self, seconds: float, run_deadline: float):
        self.start = time.monotonic()
        self.deadline = min(self.start + seconds, run_deadline)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spent(self) -> float:
        return time.monotonic() - self.start


def plan(dry_run: bool) -> dict[str, list[tuple[str, str]]]:
    """The items of every section: ``(what, detail)``; checks every op / preset / model name it refers to."""
    import timm

    import zoo.models  # noqa: F401  (registers the models)
    from benchmarks.ops import OPS, PRESETS

    missing = sorted(set(OPS) - set(OP_PRESETS))
    if missing:
        raise ValueError(f"benchmarks.gpu: ops without presets in OP_PRESETS: {missing}")
    ops_items = []
    for op in OPS:
        for preset in ("tiny",) if dry_run else OP_PRESETS[op]:
            if preset not in PRESETS[op]:
                raise ValueError(f"benchmarks.gpu: op {op} has no preset {preset!r}; it has {sorted(PRESETS[op])}")
            ops_items += [(op, preset)]
    unknown = [m for m in MODEL_FAMILIES if m not in timm.list_models()]
    if unknown:
        raise ValueError(f"benchmarks.gpu: unknown models {unknown}")
    models = [(m, c) for c in MODEL_CONFIGS for m in (DRY_RUN_MODELS if dry_run else MODEL_FAMILIES)]
    from benchmarks.memory import FAMILIES

    known = {f.model for f in FAMILIES}
    memory = [(m, str(side)) for m, side in MEMORY_CHECK[:1 if dry_run else None]]
    if any(m not in known for m, _ in memory):
        raise ValueError(f"benchmarks.gpu: MEMORY_CHECK names a model outside benchmarks.memory.FAMILIES: "
                         f"{[m for m, _ in memory if m not in known]}")
    return {"tests": [("pytest -m gpu", "collect only" if dry_run else "run")], "ops": ops_items, "models": models,
            "memory": memory}


# --------------------------------------------------------------------------------------------------------------
# Sections


def _tests(settings: Settings, budget: Budget) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += ["--collect-only", "-n", "0"] if settings.dry_run else ["--durations=10"]  # the slowest, for the budget
    t0 = time.monotonic()
    # its own process group, so that the deadline also stops pytest-xdist's workers (they hold the GPU)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(budget.left(), 1.0))
        rc, timed_out = proc.returncode, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc, timed_out = None, True
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|error|skipped|tests? collected|"
                                                               r"deselected)", ln)), lines[-1] if lines else "")
    return dict(command=" ".join(cmd[1:]), returncode=rc, timed_out=timed_out, seconds=time.monotonic() - t0,
                summary=summary.strip("= "), tail="\n".join(lines[-30:]))


def _ops(settings: Settings, budget: Budget, items: list[tuple[str, str]], log) -> tuple[list[dict], list[str]]:
    from benchmarks.harness import dtype_name
    from benchmarks.ops import OP_CANDIDATES, PRESETS, bench_op
    from ops._backend import triton_interpret

    rows, skipped = [], []
    roof = roofline(settings.device, dtype_name(settings.op_dtype), None, None)
    # round robin over the ops (first case of every op, then the second, ...): a tight budget still measures
    # every op before it measures more cases of one
    per_op = [[(op, preset, case) for op2, preset in items if op2 == op for case in PRESETS[op][preset]]
              for op in dict.fromkeys(op for op, _ in items)]
    order = [c for i in range(max(map(len, per_op), default=0)) for cases in per_op if i < len(cases)
             for c in [cases[i]]]
    for op, preset, case in order:
        if budget.left() <= 0:
            skipped.append(f"{op} {preset} {case.label}")
            continue
        log(f"[ops] {op} {preset} {case.label}")
        candidates = [c for c in OP_CANDIDATES[op] if c != "reference" or settings.dry_run]
        new = bench_op(op, [case], device=settings.device, dtype=settings.op_dtype, candidates=candidates,
                       modes=("fwdbwd",), warmup=settings.op_warmup, iters=settings.op_iters, roofline=roof,
                       allow_interpret=settings.interpret and triton_interpret(), flush_l2=True,
                       log=lambda *a, **k: log(" ".join(map(str, a))))
        for r in new:
            r["preset"] = preset
        rows += new
    return rows, skipped


@contextlib.contextmanager
def _eager_compile() -> Iterator[None]:
    """Dry run: ``torch.compile`` with the ``eager`` backend (Dynamo traces, nothing is generated; module
    docstring)."""
    original = torch.compile
    torch.compile = functools.partial(original, backend="eager")
    try:
        yield
    finally:
        torch.compile = original


def _models(settings: Settings, budget: Budget, items: list[tuple[str, str]], log) -> tuple[list[dict], list[str]]:
    from benchmarks import train_throughput

    rows, skipped = [], []
    for model, config in items:
        compiled = train_throughput.CONFIGS[config][2]
        if budget.left() <= (COMPILE_MIN_S if compiled and not settings.dry_run else 0):
            skipped.append(f"{model} {config}")
            continue
        log(f"[models] {model} {config}")
        row = dict(model=model, config=config, batch=settings.model_batch, img_size=settings.model_img)
        t0 = time.monotonic()
        try:
            with _eager_compile() if settings.dry_run else contextlib.nullcontext():
                row.update(train_throughput.measure(
                    model, config, batch=settings.model_batch, img_size=settings.model_img,
                    steps=settings.model_steps, warmup=settings.model_warmup, device=settings.device,
                    model_kwargs={"img_size": settings.model_img}))
            row["status"] = "ok"
        except Exception as e:  # one failing model must not hide the others' numbers
            row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
            log(f"!!! ERROR: {model} {config}: {row['reason']}\n{traceback.format_exc(limit=3)}")
        row["seconds"] = time.monotonic() - t0
        rows.append(row)
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, skipped


def _measured_step_mib(model_name: str, side: int, formulation: str, device: torch.device) -> float:
    """Peak allocated MiB of one fp32 training step on the GPU above what was allocated before it (section 4)."""
    import timm

    from benchmarks.official_swap import official_formulation
    from ops import use_backend

    torch.manual_seed(0)
    model = timm.create_model(model_name, img_size=side).to(device).train()
    x = torch.randn(1, 3, side, side, device=device)
    # zoo: the Triton backend on CUDA tensors (no interpreter flag, unlike the meta-device count)
    with official_formulation() if formulation == "official" else use_backend("triton"):
        model(x).float().square().mean().backward()  # warm-up: the gradients exist, the step accumulates into them
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        model(x).float().square().mean().backward()
        torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


def _memory(settings: Settings, budget: Budget, items: list[tuple[str, str]], log) -> tuple[list[dict], list[str]]:
    from benchmarks.memory import FAMILIES, measure_step

    families = {f.model: f for f in FAMILIES}
    rows, skipped = [], []
    for model, side in items:
        for formulation in ("official", "zoo"):
            if budget.left() <= 0:
                skipped.append(f"{model} {side} {formulation}")
                continue
            log(f"[memory] {model} {side} {formulation}")
            row = dict(model=model, side=int(side), formulation=formulation, status="ok")
            try:
                counted = measure_step(families[model], int(side), formulation)
                row.update(saved_mib=counted.saved_bytes / 2 ** 20, counted_peak_mib=counted.peak_bytes / 2 ** 20)
                if settings.device.type == "cuda":
                    row["measured_peak_mib"] = _measured_step_mib(model, int(side), formulation, settings.device)
            except Exception as e:  # one failing model must not hide the others' numbers
                row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
                log(f"!!! ERROR: memory {model} {formulation}: {row['reason']}")
            rows.append(row)
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, skipped


# --------------------------------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _markdown(meta: dict, settings: Settings, sections: dict[str, dict]) -> str:
    from benchmarks.ops import format_op_rows

    title = "Dry run (CPU, tiny shapes, 1 iteration: NOT results)" if settings.dry_run else "GPU run"
    out = [f"# {title}: {meta['device_name']}, {meta['date']}", "",
           f"`python -m benchmarks.gpu{' --dry-run' if settings.dry_run else ''}` at commit `{meta['git_commit']}`; "
           f"torch {meta['torch']}, CUDA {meta['cuda']}, triton {meta['triton']}, timm {meta['timm']}.", "",
           "| section | budget s | spent s | items run | skipped (budget) |", "|---|---|---|---|---|"]
    for name, s in sections.items():
        out.append(f"| {name} | {s['budget']:.0f} | {s['spent']:.1f} | {s['run']} | {len(s['skipped'])} |")
    tests = sections["tests"]["result"]
    out += ["", "## 1. `pytest -m gpu`", "",
            f"`{tests['command']}`: {tests['summary'] or '(no summary)'}"
            + (" -- TIMED OUT at the section's deadline" if tests["timed_out"] else "")
            + f" (exit {tests['returncode']}, {tests['seconds']:.1f} s)"]
    if tests["returncode"] not in (0, None) or tests["timed_out"]:
        out += ["", "```", tests["tail"], "```"]
    op_rows = sections["ops"]["result"]
    out += ["", f"## 2. Ops, forward + backward, {str(settings.op_dtype).replace('torch.', '')}", "",
            "Speedup = official's time / the candidate's; MiB = peak allocated above the inputs during one "
            "forward + backward (`benchmarks/ops`).", ""]
    for op in dict.fromkeys(r["op"] for r in op_rows):
        out += [f"### {op}", "", format_op_rows([r for r in op_rows if r["op"] == op], markdown=True), ""]
    model_rows = sections["models"]["result"]
    out += ["## 3. Models: one training step (AdamW), bf16 autocast",
            "", f"Batch {settings.model_batch} at {settings.model_img}x{settings.model_img}, "
            f"{settings.model_steps} timed steps after {settings.model_warmup} warm-up steps "
            "(`benchmarks/train_throughput.py`); warm-up includes compilation.", "",
            "| model | config | status | img/s | ms/step | peak MiB | warm-up s |", "|---|---|---|---|---|---|---|"]
    for r in model_rows:
        out.append(f"| `{r['model']}` | {r['config']} | {r['status'] if r['status'] == 'ok' else r['reason']} | "
                   f"{_fmt(r.get('img_per_s'), '.1f')} | {_fmt(r.get('ms_per_step'), '.2f')} | "
                   f"{_fmt(r.get('peak_mem_mb'), '.0f')} | {_fmt(r.get('warmup_s'), '.1f')} |")
    out += ["", "## 4. Memory: counted on the meta device vs measured by the allocator (fp32, batch 1)", "",
            "Counted: `benchmarks.memory` (saved for backward, peak live; weights, their gradients and the input "
            "excluded). Measured: `torch.cuda.max_memory_allocated` during one step above what was allocated "
            "before it.", "",
            "| model | side | formulation | status | saved MiB | counted peak MiB | measured peak MiB "
            "| measured / counted |", "|---|---|---|---|---|---|---|---|"]
    for r in sections["memory"]["result"]:
        ratio = (r["measured_peak_mib"] / r["counted_peak_mib"]
                 if r.get("measured_peak_mib") is not None and r.get("counted_peak_mib") else None)
        out.append(f"| `{r['model']}` | {r['side']} | {r['formulation']} | "
                   f"{r['status'] if r['status'] == 'ok' else r['reason']} | {_fmt(r.get('saved_mib'), '.1f')} | "
                   f"{_fmt(r.get('counted_peak_mib'), '.1f')} | {_fmt(r.get('measured_peak_mib'), '.1f')} | "
                   f"{_fmt(ratio, '.2f')} |")
    skipped = [(name, item) for name, s in sections.items() for item in s["skipped"]]
    if skipped:
        out += ["", "## Skipped at a section's deadline", ""] + [f"- {name}: {item}" for name, item in skipped]
    return "\n".join(out) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def failures(sections: dict[str, dict]) -> list[str]:
    """What went wrong in a run: failed tests, op candidates that mismatched or failed, models that failed."""
    bad = []
    tests = sections["tests"]["result"]
    if tests["timed_out"] or tests["returncode"] not in (0, 5):  # 5: no test collected / all deselected
        bad.append(f"pytest -m gpu: {tests['summary']}" + (" (timed out)" if tests["timed_out"] else ""))
    bad += [f"{r['op']} {r['case']} {r['impl']}: {r['status']}" for r in sections["ops"]["result"]
            if r["status"] in ("MISMATCH", "ERROR")]
    bad += [f"{r['model']} {r['config']}: {r['reason']}" for r in sections["models"]["result"] if r["status"] != "ok"]
    bad += [f"memory {r['model']} {r['formulation']}: {r['reason']}" for r in sections["memory"]["result"]
            if r["status"] != "ok"]
    return bad


def run(*, dry_run: bool, out_dir: Path, budget_s: float = sum(SECTIONS.values()), interpret: bool = False,
        log=print) -> tuple[Path, list[str]]:
    """Run every section (module docstring); returns the markdown's path and :func:`failures`."""
    settings = Settings.for_run(dry_run, interpret)
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError("benchmarks.gpu: no CUDA device here; run with --dry-run on the CPU")
    items = plan(dry_run)
    t0 = time.monotonic()
    run_deadline = t0 + budget_s
    scale = budget_s / sum(SECTIONS.values())
    sections: dict[str, dict] = {}
    for name in SECTIONS:
        budget = Budget(SECTIONS[name] * scale, run_deadline)
        log(f"== {name}: {len(items[name])} items, {budget.left():.0f} s")
        if name == "tests":
            result, skipped = _tests(settings, budget), []
        elif name == "ops":
            result, skipped = _ops(settings, budget, items[name], log)
        elif name == "models":
            result, skipped = _models(settings, budget, items[name], log)
        else:
            result, skipped = _memory(settings, budget, items[name], log)
        sections[name] = dict(budget=SECTIONS[name] * scale, spent=budget.spent(), result=result, skipped=skipped,
                              run=len(items[name]) - len(skipped))
    meta = run_meta(settings.device, None, what="prepared GPU run" + (" (dry run)" if dry_run else ""),
                    total_s=time.monotonic() - t0)
    device = "cpu-dry-run" if dry_run else _slug(meta["device_name"])
    date = datetime.date.today().isoformat()
    md = Path(out_dir) / f"{date}-{device}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(_markdown(meta, settings, sections))
    write_json(md.with_suffix(".json"), dict(meta=meta, sections=sections))
    bad = failures(sections)
    log(f"wrote {md} ({meta['total_s']:.0f} s); " + (f"{len(bad)} failures:\n  " + "\n  ".join(bad) if bad
                                                     else "no failures"))
    return md, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, 1 iteration (module docstring)")
    parser.add_argument("--allow-interpret", action="store_true",
                        help="--dry-run: run the triton candidate in Triton's interpreter (TRITON_INTERPRET=1 needed)")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results (a temporary folder for --dry-run)")
    parser.add_argument("--budget", type=float, default=sum(SECTIONS.values()),
                        help=f"total seconds, shared by the sections in proportion to {SECTIONS}")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here; the CPU can only run --dry-run")
    if args.allow_interpret and not args.dry_run:
        parser.error("--allow-interpret is for --dry-run only")
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="gpu-dry-run-")) if args.dry_run
                               else ROOT / "benchmarks" / "results")
    _, bad = run(dry_run=args.dry_run, out_dir=out_dir, budget_s=args.budget, interpret=args.allow_interpret,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
