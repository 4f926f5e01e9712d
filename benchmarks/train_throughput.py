"""Training-step throughput of a zoo model: fp32 eager against bf16 / channels-last / torch.compile.

    python benchmarks/train_throughput.py --model zoo_davit_tiny [--batch 128] [--img-size 224]
        [--configs fp32,bf16,bf16_cl,bf16_compile,bf16_compile_cl] [--json benchmarks/results/FILE.json]

One step is what ``train.py`` does per batch: forward, label-smoothed cross-entropy, backward, AdamW step (timm's
factories, the model's no-weight-decay names), on synthetic inputs already on the device (the data pipeline is
not measured). Each configuration warms up (compilation included) and then times ``--steps`` steps with CUDA
events; img/s and the peak memory are reported per configuration, with the speed-up over fp32 eager. Timings are
only meaningful on a GPU: on the CPU the script runs (``--device cpu``, used by the CI smoke test) but refuses to
record results unless ``--allow-cpu`` is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/NAME.py): the repository root first, not benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import Timer, run_meta, write_json  # noqa: E402

CONFIGS = {  # name: (amp dtype, channels_last, compile)
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16_cl": (torch.bfloat16, True, False),
    "bf16_compile": (torch.bfloat16, False, True),
    "bf16_compile_cl": (torch.bfloat16, True, True),
}


def measure(model_name: str, config: str, *, batch: int, img_size: int, steps: int, warmup: int,
            device: torch.device, model_kwargs: dict) -> dict:
    import timm
    import timm.optim
    from timm.loss import LabelSmoothingCrossEntropy

    import zoo  # noqa: F401  (registers the zoo models)

    dtype, channels_last, compile_ = CONFIGS[config]
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=1000, **model_kwargs).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = timm.optim.create_optimizer_v2(model, opt="adamw", lr=1e-4, weight_decay=0.05)
    step_model = torch.compile(model) if compile_ else model
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = Timer(device, warmup, steps).measure(step)
    return {"config": config, "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
            "channels_last": channels_last, "compile": compile_, "img_per_s": batch * steps / t.total_s,
            "ms_per_step": 1000 * t.total_s / steps, "warmup_s": t.warmup_s, "peak_mem_mb": t.peak_mib}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train_throughput.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="zoo_davit_tiny")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for timm.create_model")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--allow-cpu", action="store_true", help="record CPU numbers too (not comparable timings)")
    p.add_argument("--json", metavar="PATH", help="write the results here (default: print only)")
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; GPU timings need one (--device cpu runs a smoke test)")
    if args.json and device.type != "cuda" and not args.allow_cpu:
        p.error("refusing to record CPU timings as results; pass --allow-cpu to write them anyway")
    kwargs = json.loads(args.model_kwargs)
    rows = []
    for config in configs:
        row = measure(args.model, config, batch=args.batch, img_size=args.img_size, steps=args.steps,
                      warmup=args.warmup, device=device, model_kwargs=kwargs)
        rows.append(row)
    base = next((r["img_per_s"] for r in rows if r["config"] == "fp32"), None)
    for r in rows:
        r["speedup_vs_fp32_eager"] = r["img_per_s"] / base if base else None
        print(f"{r['config']:>16}: {r['img_per_s']:9.1f} img/s  {r['ms_per_step']:8.2f} ms/step"
              + (f"  x{r['speedup_vs_fp32_eager']:.2f}" if base else "")
              + (f"  peak {r['peak_mem_mb']:.0f} MiB" if r["peak_mem_mb"] is not None else ""))
    if args.json:
        meta = run_meta(device, argv, what="training-step throughput")
        write_json(args.json, dict(meta=meta, model=args.model, model_kwargs=kwargs, batch=args.batch,
                                   img_size=args.img_size, steps=args.steps, warmup=args.warmup, results=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
