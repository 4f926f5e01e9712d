"""``python eval.py bench ...`` (or ``python -m benchmarks``): speed and memory of the ops and of whole models.

    python eval.py bench --op window_attention --preset davit_t_224 --dtype bf16
    python eval.py bench --op window_attention --shape 64,56,56,3,32 --window 7 --bias
    python eval.py bench --op channel_attention --shape 64,3136,3,32
    python eval.py bench --op bilevel_routing_attention --preset biformer_s_224 --dtype bf16
    python eval.py bench --model zoo_davit_tiny --batch 64 --dtype bf16 --backends reference,triton \\
        --baseline-model davit_tiny --channels-last --compile
    python eval.py bench ... --json benchmarks/results/NAME.json --markdown

Op benchmarks: :mod:`benchmarks.ops` (one module per op). Model benchmarks: :mod:`benchmarks.models`. The timer,
roofline and JSON header: :mod:`benchmarks.harness`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from benchmarks.harness import DTYPES, device_peak, roofline, run_meta, write_json
from benchmarks.models import bench_model, format_model_rows
from benchmarks.ops import OP_BENCHES, OP_CANDIDATES, OPS, PRESETS, bench_op, format_op_rows

__all__ = ["main"]

_EPILOG = """\
presets (--preset, per op):
{presets}
examples:
  python eval.py bench --op window_attention --preset davit_t_224 --dtype bf16
  python eval.py bench --op window_attention --shape 8,64,64,6,30 --window 16 --bias --mask
  python eval.py bench --op channel_attention --preset tiny --device cpu --dtype fp32
  python eval.py bench --op bilevel_routing_attention --shape 16,56,56,2,32,7,1 --dtype bf16
  python eval.py bench --op hilo_attention --preset litv2_s_224 --dtype bf16
  python eval.py bench --model zoo_davit_tiny --batch 64 --dtype bf16 --backends reference,triton \\
      --baseline-model davit_tiny --json benchmarks/results/davit_tiny_h100.json
exit status: 0 all good; 1 a candidate mismatched the baseline or failed; 2 bad arguments.
"""


_CPU_MEMORY_NOTE = "; memory: n/a on the CPU (no allocator statistics)"


class _ArgError(ValueError):
    pass


def _parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  {op}: {', '.join(p)}" for op, p in PRESETS.items())
    p = argparse.ArgumentParser(
        prog="eval.py bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG.format(presets=presets),
        description="Time attention ops against their official formulation and SDPA, or whole models per backend: "
                    "median time, peak memory, fraction of the roofline floor. See benchmarks/cli.py.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--op", choices=OPS, help="benchmark one op")
    what.add_argument("--model", metavar="NAME", help="benchmark a model (any timm name, zoo models included)")
    what.add_argument("--list", action="store_true", help="list the ops, presets and zoo models, then exit")

    o = p.add_argument_group("ops")
    o.add_argument("--preset", action="append", default=[], metavar="NAME", help="named shape set (repeatable)")
    o.add_argument("--shape", action="append", default=[], metavar="DIMS",
                   help="window_attention: B,H,W,heads,D; channel_attention: B,N,groups,D; "
                        "bilevel_routing_attention: B,H,W,heads,D,n_win,topk; --list shows every op's "
                        "(repeatable)")
    o.add_argument("--window", default="7", metavar="WS|WHxWW", help="window of --shape cases (default 7)")
    o.add_argument("--bias", action="store_true", help="--shape cases get a relative-position bias table")
    o.add_argument("--mask", action="store_true", help="--shape cases get a Swin shifted-window mask")
    o.add_argument("--candidates", default=None,
                   help="comma list from official,sdpa,reference,triton (bilevel_routing_attention: official,flex,"
                        "reference,triton; --list shows every op's); default all; official always runs: it is the "
                        "baseline")
    o.add_argument("--peak-tflops", type=float, metavar="TF/S", help="peak FLOP rate for the roofline")
    o.add_argument("--peak-gbs", type=float, metavar="GB/S", help="peak memory bandwidth for the roofline")
    o.add_argument("--no-flush-l2", action="store_true", help="GPU: do not flush L2 between timed runs")

    m = p.add_argument_group("models")
    m.add_argument("--backends", default=None, help="comma list of ops backends (default: reference, plus "
                                                    "triton where it can run)")
    m.add_argument("--baseline-model", metavar="NAME",
                   help="a model with the same state-dict layout, timed and used as the numerical baseline")
    m.add_argument("--img-size", type=int, help="input size (default: the model's pretrained_cfg input_size)")
    m.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    m.add_argument("--channels-last", action="store_true", help="channels-last model and input")

    c = p.add_argument_group("common")
    c.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    c.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="ops: input dtype; models: autocast dtype (fp32: none). Default bf16 on CUDA, fp32 on CPU")
    c.add_argument("--mode", choices=("fwd", "fwdbwd", "both"), default="both", help="what to time (default both)")
    c.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 on CUDA, 1 on CPU)")
    c.add_argument("--iters", type=int, default=None, help="timed runs, median reported (default 50 CUDA, 5 CPU)")
    c.add_argument("--compile", action="store_true", help="torch.compile every candidate / model")
    c.add_argument("--allow-interpret", action="store_true",
                   help="CPU: run the triton backend in Triton's interpreter, and FlexAttention's eager forward "
                        "(with --mode fwd) (very slow; for checking the harness)")
    c.add_argument("--threads", type=int, metavar="N",
                   help="CPU: torch.set_num_threads(N) (on a loaded machine, 1 gives far steadier timings)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", metavar="OUT", help="write the results, with device and versions, to this JSON file")
    c.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    return p


def _split(value: str, valid: Sequence[str], what: str) -> list[str]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in items if s not in valid]
    if bad or not items:
        raise _ArgError(f"{what}: unknown {bad or value!r}; valid: {', '.join(valid)}")
    return items


def _parse_cases(args) -> list:
    op = args.op
    bench = OP_BENCHES[op]
    cases = []
    for name in args.preset:
        if name not in PRESETS[op]:
            raise _ArgError(f"--preset: unknown preset {name!r} for {op}; valid: {', '.join(PRESETS[op])}")
        cases += PRESETS[op][name]
    fields = bench.shape_fields
    for spec in args.shape:
        try:
            dims = [int(s) for s in spec.split(",")]
        except ValueError:
            dims = []
        if len(dims) != len(fields.split(",")) or min(dims) <= 0:
            raise _ArgError(f"--shape: {op} expects {len(fields.split(','))} positive sizes {fields}, got {spec!r}")
        try:
            cases.append(bench.shape_case(dims, args) if bench.shape_case else bench.case_type(*dims))
        except ValueError as e:
            raise _ArgError(str(e)) from None
        if bench.check_case and (problem := bench.check_case(cases[-1])):
            raise _ArgError(f"--shape {spec}: {problem}")
    if op != "window_attention" and (args.bias or args.mask or args.window != "7"):
        raise _ArgError(f"--window / --bias / --mask apply to window_attention only, not {op}")
    if not cases:
        raise _ArgError(f"--op {op}: give --preset (one of {', '.join(PRESETS[op])}) and/or --shape {fields}")
    return cases


def _device(value: str | None) -> torch.device:
    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise _ArgError(f"--device: expected cuda, cuda:N or cpu, got {value!r}") from None
    if device.type not in ("cuda", "cpu"):
        raise _ArgError(f"--device: expected cuda, cuda:N or cpu, got {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _ArgError("--device cuda: CUDA is not available here; use --device cpu")
    return device


def _model_names() -> list[str]:
    import zoo

    return zoo.list_models()


def _check_model_name(name: str, option: str) -> None:
    import timm

    import zoo  # noqa: F401

    if name not in timm.list_models():
        raise _ArgError(f"{option}: unknown model {name!r}; zoo models: {', '.join(_model_names())} "
                        f"(any name from timm.list_models() works too)")


def main(argv: list[str] | None = None) -> int:
    """``python eval.py bench ARGS``; returns the exit status (0 ok, 1 mismatch / failure, 2 bad arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage / help
        return int(e.code or 0)
    try:
        if args.list:
            for op, presets in PRESETS.items():
                print(f"{op}:  (--shape {OP_BENCHES[op].shape_fields}; candidates {', '.join(OP_CANDIDATES[op])})")
                for pname, cases in presets.items():
                    print(f"  {pname}: {'; '.join(c.label for c in cases)}")
            print(f"models: {', '.join(_model_names())}")
            return 0
        device = _device(args.device)
        dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
        dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
        cuda = device.type == "cuda"
        warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
        iters = args.iters if args.iters is not None else (50 if cuda else 5)
        if warmup < 0 or iters < 1:
            raise _ArgError(f"--warmup must be >= 0 and --iters >= 1, got {warmup} and {iters}")
        modes = ("fwd", "fwdbwd") if args.mode == "both" else (args.mode,)
        if args.threads is not None:
            if args.threads < 1:
                raise _ArgError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if cuda:
            torch.cuda.set_device(device)
        meta = run_meta(device, argv, dtype=dtype_name, warmup=warmup, iters=iters, modes=list(modes),
                        compile=args.compile)
        if args.op:
            if args.backends or args.baseline_model or args.channels_last or args.img_size:
                raise _ArgError("--backends / --baseline-model / --img-size / --channels-last apply to --model only")
            cases = _parse_cases(args)
            valid = tuple(OP_CANDIDATES[args.op])
            candidates = _split(args.candidates or ",".join(valid), valid, "--candidates")
            if (args.peak_tflops is None) != (args.peak_gbs is None) and device_peak(
                    torch.cuda.get_device_name(device) if cuda else "") is None:
                raise _ArgError("--peak-tflops and --peak-gbs: give both (no datasheet peaks for this device)")
            roof = roofline(device, dtype_name, args.peak_tflops, args.peak_gbs)
            meta.update(op=args.op, roofline=dict(tflops=roof.tflops, gbs=roof.gbs, source=roof.source))
            print(f"{args.op} on {meta['device_name']} ({device}), {dtype_name}, median of {iters} after {warmup} "
                  f"warmup; roofline: {roof.source}" + (f" {roof.tflops:g} TFLOP/s, {roof.gbs:g} GB/s"
                                                        if roof.known else "") + _CPU_MEMORY_NOTE * (not cuda))
            rows = bench_op(args.op, cases, device=device, dtype=dtype, candidates=candidates, modes=modes,
                            warmup=warmup, iters=iters, roofline=roof, allow_interpret=args.allow_interpret,
                            compile=args.compile, flush_l2=not args.no_flush_l2, seed=args.seed)
            print(format_op_rows(rows, args.markdown))
            result = dict(meta=meta, ops=rows)
        else:
            from ops import BACKENDS

            if args.preset or args.shape or args.peak_tflops or args.peak_gbs:
                raise _ArgError("--preset / --shape / --peak-tflops / --peak-gbs apply to --op only")
            _check_model_name(args.model, "--model")
            if args.baseline_model:
                _check_model_name(args.baseline_model, "--baseline-model")
            if args.batch < 1 or (args.img_size is not None and args.img_size < 1):
                raise _ArgError(f"--batch and --img-size must be positive, got {args.batch} and {args.img_size}")
            default = "reference,triton" if cuda else "reference"
            backends = _split(args.backends or default, BACKENDS, "--backends")
            print(f"{args.model} on {meta['device_name']} ({device}), {dtype_name}"
                  f"{' autocast' if dtype != torch.float32 else ''}, median of {iters} after {warmup} warmup"
                  + _CPU_MEMORY_NOTE * (not cuda))
            rows = bench_model(args.model, backends=backends, baseline_model=args.baseline_model,
                               img_size=args.img_size, batch=args.batch, device=device, dtype=dtype,
                               channels_last=args.channels_last, compile=args.compile, modes=modes, warmup=warmup,
                               iters=iters, allow_interpret=args.allow_interpret, seed=args.seed)
            print(format_model_rows(rows, args.markdown))
            result = dict(meta=meta, models=rows)
    except _ArgError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, result)
    bad = [r for r in rows if r["status"] in ("MISMATCH", "ERROR")]
    if bad:
        print(f"!!! {len(bad)} candidate(s) failed the check or errored: "
              f"{', '.join(sorted({r['impl'] + ' ' + r['status'] for r in bad}))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
