"""The CPU path against the official code, side by side: each family's small model, and each op at its paper's
stage shapes, timed with the official formulation and with the zoo's reference path in one run.

    python -m benchmarks.cpu_vs_official [--families NAT,DiNAT | all] [--ops all | none | OP,...]
        [--side 224] [--sr-side 128] [--batch 1] [--op-batch 1] [--repeats 5] [--warmup 1] [--threads 2]
        [--modes fwd,fwdbwd] [--clock wall | cpu] [--json FILE] [--markdown FILE]

Models: every family of :data:`benchmarks.memory.FAMILIES` (its smallest model; classification at ``--side``^2,
HAT x2 at ``--sr-side``^2 output), built once (seed 0) and run with
the same weights and input twice per repeat: once as the zoo runs it on the CPU (``ops`` backend ``reference``)
and once under :func:`benchmarks.official_swap.official_formulation` (each op replaced by its
``ops/<op>/official.py`` function, the official code's math). ``fwd``: eval mode, ``torch.no_grad``.
``fwdbwd``: train mode, forward, ``mean(output^2)``, backward; the RNG is reseeded before each call so that both
formulations draw the same stochastic-depth masks. The output error between the two (relative L2) is reported.

Ops: every op module of :mod:`benchmarks.ops` at the preset with its paper's 224^2 stage shapes
(:data:`OP_PRESETS`), batch replaced by ``--op-batch``, candidates ``official`` and ``reference`` on the same
inputs; ``fwdbwd`` takes the gradients of ``mean(output^2)`` w.r.t. the inputs (packed ``qkv``, bias tables).

Timing: ``--threads`` intra-op threads (``torch.set_num_threads``; default 2, as the issue measured), ``--warmup``
untimed calls of each side, then ``--repeats`` rounds in which both sides run once, their order alternating from
round to round (a slow spell of a shared machine hits both); median per side; ``ratio = official / zoo`` (> 1: the
zoo is faster). The fastest round of each side is kept too (``best_ratio``): on a loaded machine other processes'
work lands in the timings -- with 2 threads on busy cores every parallel region waits for the slower thread, so
an implementation of many short ops suffers more than one of few long ones -- and the fastest round is the least
disturbed. The machine's load average at the start and end of the run is recorded. ``--clock cpu`` times with
``time.process_time`` (CPU seconds of this process, all its threads) instead of the wall clock: with
``--threads 1`` it does not count the time the process waits for a core that others hold, so it compares the
two sides fairly on a shared machine (with more threads it also counts the threads' spin-waiting).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/NAME.py): the repository root first, not benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import environment, rel_err, write_json  # noqa: E402

__all__ = ["CLOCKS", "MODES", "OP_PRESETS", "Row", "bench_family", "bench_op_case", "format_markdown", "main", "run",
           "time_pair"]

MODES = ("fwd", "fwdbwd")

# op -> the preset holding its paper's stage shapes at 224^2 (HAT: the 64^2 LR patch its SR models train on)
OP_PRESETS = {
    "agent_attention": "agent_swin_t_224",
    "bilevel_routing_attention": "biformer_s_224",
    "channel_attention": "davit_t_224",
    "hilo_attention": "litv2_s_224",
    "neighborhood_attention_2d": "dinat_t_224",
    "overlapping_window_attention": "hat_64",
    "rala": "ravlt_s_224",
    "window_attention": "davit_t_224",
    "window_grid_attention": "emo2_5m_224",
}


@dataclasses.dataclass
class Row:
    """One model or op case in one mode: median times (ms) of both sides, their ratio, the output error."""

    kind: str  # "model" or "op"
    name: str  # family label or op name
    case: str  # model name and input, or the op case's label
    mode: str
    official_ms: float
    zoo_ms: float
    rel_err: float | None
    official_best_ms: float | None = None
    zoo_best_ms: float | None = None

    @property
    def ratio(self) -> float:
        return self.official_ms / self.zoo_ms

    @property
    def best_ratio(self) -> float | None:
        return None if self.zoo_best_ms is None else self.official_best_ms / self.zoo_best_ms

    def as_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), ratio=self.ratio, best_ratio=self.best_ratio)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_pair(official: Callable[[], Any], zoo: Callable[[], Any], *, warmup: int, repeats: int,
              clock: str = "wall") -> tuple[float, float, float, float]:
    """Median and minimum wall-clock ms of ``official()`` and ``zoo()``: ``(official median, zoo median, official
    min, zoo min)`` (module docstring: warm-up, alternating order)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_pair: repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"time_pair: clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    for _ in range(warmup):
        official()
        zoo()
    times: dict[str, list[float]] = {"official": [], "zoo": []}
    for i in range(repeats):
        order = (("official", official), ("zoo", zoo)) if i % 2 == 0 else (("zoo", zoo), ("official", official))
        for side, fn in order:
            start = now()
            fn()
            times[side].append((now() - start) * 1e3)
    return (statistics.median(times["official"]), statistics.median(times["zoo"]), min(times["official"]),
            min(times["zoo"]))


def _tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of an op's or a model's output (a tensor, or a tuple with ``None`` for an absent path)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out if isinstance(t, torch.Tensor)]


def _loss(out: Any) -> torch.Tensor:
    return sum(t.float().square().mean() for t in _tensors(out))


def _output_error(a: Any, b: Any) -> float:
    return max(rel_err(x.detach(), y.detach()) for x, y in zip(_tensors(a), _tensors(b), strict=True))


# --------------------------------------------------------------------------------------------------------------
# Models


def bench_family(family, *, side: int, sr_side: int, batch: int, modes: Sequence[str], warmup: int, repeats: int,
                 clock: str = "wall", log=print) -> list[Row]:
    """Both formulations of ``family``'s model (a :class:`benchmarks.memory.Family`) at output side ``side``
    (``sr_side`` for a super-resolution family)."""
    import timm

    import zoo  # noqa: F401  (registers the zoo's models)
    from benchmarks.official_swap import official_formulation
    from ops import use_backend

    torch.manual_seed(0)
    kwargs = dict(img_size=side) if family.img_size else {}
    model = timm.create_model(family.model, **kwargs)
    in_side = family.input_side(sr_side if family.scale > 1 else side)
    x = torch.randn(batch, model.pretrained_cfg["input_size"][0], in_side, in_side,
                    generator=torch.Generator().manual_seed(1))
    case = f"{family.model} {batch}x{in_side}x{in_side}"
    rows = []
    for mode in modes:
        if mode == "fwd":
            model.eval()

            def step():
                with torch.no_grad():
                    return model(x)
        else:
            model.train()

            def step():
                torch.manual_seed(2)
                model.zero_grad(set_to_none=True)
                out = model(x)
                _loss(out).backward()
                return out.detach()

        def official():
            with official_formulation() as calls:
                out = step()
            if not calls:
                raise RuntimeError(f"{family.model}: the official formulation was never called")
            return out

        def zoo_ref():
            with use_backend("reference"):
                return step()

        err = _output_error(official(), zoo_ref())
        times = time_pair(official, zoo_ref, warmup=warmup, repeats=repeats, clock=clock)
        rows.append(Row("model", family.label, case, mode, times[0], times[1], err, times[2], times[3]))
        log(_line(rows[-1]))
    return rows


# --------------------------------------------------------------------------------------------------------------
# Ops


def bench_op_case(bench, case, *, modes: Sequence[str], warmup: int, repeats: int, clock: str = "wall",
                  log=print) -> list[Row]:
    """``official`` against ``reference`` of one :class:`benchmarks.harness.OpBench` case, same inputs."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    inputs = bench.make_inputs(case, device, torch.float32, True)
    official_fn, reference_fn = bench.candidates["official"], bench.candidates["reference"]
    rows = []
    for mode in modes:
        if mode == "fwd":
            def call(fn):
                with torch.no_grad():
                    return fn(inputs, case)
        else:
            def call(fn):
                out = fn(inputs, case)
                torch.autograd.grad(_loss(out), inputs.leaves, allow_unused=True)
                return out

        err = _output_error(call(official_fn), call(reference_fn))
        times = time_pair(lambda: call(official_fn), lambda: call(reference_fn), warmup=warmup, repeats=repeats,
                          clock=clock)
        rows.append(Row("op", bench.name, case.label, mode, times[0], times[1], err, times[2], times[3]))
        log(_line(rows[-1]))
    return rows


# --------------------------------------------------------------------------------------------------------------
# The run and its tables


def _line(row: Row) -> str:
    return (f"{row.kind:5s} {row.name:28s} {row.case:44s} {row.mode:6s} official {row.official_ms:9.1f} ms  "
            f"zoo {row.zoo_ms:9.1f} ms  ratio {row.ratio:5.2f} (best {row.best_ratio:5.2f})  rel err {row.rel_err:.1e}")


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run(families: Sequence, op_names: Sequence[str], *, side: int, sr_side: int, batch: int, op_batch: int,
        modes: Sequence[str], warmup: int, repeats: int, threads: int, clock: str = "wall",
        log=print) -> dict[str, Any]:
    """Every family and op case in every mode (module docstring); a JSON-ready record."""
    from benchmarks.ops import OP_BENCHES

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"cpu_vs_official: modes must be among {MODES}, got {list(modes)}")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_start = _load()
    meta = environment(torch.device("cpu"))
    rows: list[Row] = []
    try:
        for family in families:
            rows += bench_family(family, side=side, sr_side=sr_side, batch=batch, modes=modes, warmup=warmup,
                                 repeats=repeats, clock=clock, log=log)
        for name in op_names:
            bench = OP_BENCHES[name]
            for case in bench.presets[OP_PRESETS[name]]:
                case = dataclasses.replace(case, batch=op_batch)
                rows += bench_op_case(bench, case, modes=modes, warmup=warmup, repeats=repeats, clock=clock, log=log)
    finally:
        torch.set_num_threads(saved_threads)
    settings = dict(side=side, sr_side=sr_side, batch=batch, op_batch=op_batch, modes=list(modes), warmup=warmup,
                    repeats=repeats, threads=threads, clock=clock, load_average_start=load_start,
                    load_average_end=_load(), cpu_count=os.cpu_count())
    return {"meta": meta, "settings": settings, "rows": [r.as_dict() for r in rows]}


def format_markdown(record: dict[str, Any]) -> str:
    """One table per kind: fwd and fwd+bwd side by side, official / zoo ratio of the medians (> 1: the zoo is
    faster), and of the fastest rounds in parentheses."""
    s = record["settings"]
    clock = "CPU time of the process" if s.get("clock") == "cpu" else "wall clock"
    lines = [f"{s['threads']} threads, {clock}, median of {s['repeats']} after {s['warmup']} warm-up, load average "
             f"{s['load_average_start']} -> {s['load_average_end']} on {s['cpu_count']} CPUs; "
             f"ratio = official / zoo median time (> 1: zoo faster), in parentheses the ratio of the fastest rounds",
             ""]
    model_title = f"Models (input {s['side']}^2, super-resolution output {s['sr_side']}^2, batch {s['batch']})"
    for kind, title in (("model", model_title),
                        ("op", f"Ops (paper stage shapes at 224^2, HAT at a 64^2 patch; batch {s['op_batch']})")):
        rows = [r for r in record["rows"] if r["kind"] == kind]
        if not rows:
            continue
        by_key: dict[tuple[str, str], dict[str, dict]] = {}
        for r in rows:
            by_key.setdefault((r["name"], r["case"]), {})[r["mode"]] = r
        lines += [f"### {title}", "",
                  "| family / op | case | fwd official ms | fwd zoo ms | fwd ratio | fwd+bwd official ms | "
                  "fwd+bwd zoo ms | fwd+bwd ratio | rel err |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for (name, case), modes in by_key.items():
            cells = []
            for mode in MODES:
                r = modes.get(mode)
                cells += ([f"{r['official_ms']:.1f}", f"{r['zoo_ms']:.1f}",
                           f"**{r['ratio']:.2f}** ({r['best_ratio']:.2f})"] if r else ["", "", ""])
            err = max(r["rel_err"] for r in modes.values())
            lines.append(f"| {name} | {case} | " + " | ".join(cells) + f" | {err:.1e} |")
        lines.append("")
    return "\n".join(lines)


def _select(kind: str, given: str, known: dict[str, Any]) -> list[Any]:
    if given == "none":
        return []
    if given == "all":
        return list(dict.fromkeys(known.values()))  # each once (families are known by label and by model name)
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"cpu_vs_official: unknown {kind} {unknown}; known: {', '.join(known)}, all, none")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.memory import FAMILIES

    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_vs_official", description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="all", help="comma-separated family labels or model names, all, none")
    p.add_argument("--ops", default="all", help=f"comma-separated ops ({', '.join(OP_PRESETS)}), all, none")
    p.add_argument("--side", type=int, default=224, help="input side of the classification models")
    p.add_argument("--sr-side", type=int, default=128,
                   help="output side of the super-resolution models (HAT x2: 128 = the 64^2 LR training patch)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--op-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default="fwd,fwdbwd")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: time.perf_counter; cpu: time.process_time (module docstring)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--markdown", metavar="FILE")
    args = p.parse_args(argv)
    for name in ("side", "sr_side", "batch", "op_batch", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    families_by_name = {f.label: f for f in FAMILIES} | {f.model: f for f in FAMILIES}
    families = _select("families", args.families, families_by_name)
    ops_known = {name: name for name in OP_PRESETS}
    op_names = _select("ops", args.ops, ops_known)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes must be a comma-separated subset of {','.join(MODES)}, got {args.modes!r}")
    record = run(families, op_names, side=args.side, sr_side=args.sr_side, batch=args.batch, op_batch=args.op_batch,
                 modes=modes, warmup=args.warmup, repeats=args.repeats, threads=args.threads, clock=args.clock)
    record["meta"]["command"] = "python -m benchmarks.cpu_vs_official " + " ".join(argv if argv is not None
                                                                                   else sys.argv[1:])
    text = format_markdown(record)
    print(text)
    if args.json:
        write_json(args.json, record)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
