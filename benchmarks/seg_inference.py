"""Segmentation inference speed and peak memory of mmseg configs on zoo backbones: PyTorch reference ops vs Triton.

    python benchmarks/seg_inference.py [--config configs/seg/A.py ...] [--sizes 512x512,1024x2048]
        [--modes whole,slide] [--backends reference,triton] [--amp bf16] [--json benchmarks/results/FILE.json]

For every config x size x test mode, the same segmentor (random weights; the backbone's ``init_cfg`` is dropped,
weights do not change the cost) runs ``model.inference`` -- what mmseg's tester calls per image -- once per backend
in one process, side by side: img/s, ms per image and peak CUDA memory, with the Triton speed-up over the reference
ops. Without ``--config``, the smallest config of each family in ``configs/seg`` (the first file in name order per
backbone family: the one with the fewest parameters). Sizes are ``HxW``; ``1024x2048`` is Cityscapes' 2048x1024.
Slide mode uses the config's crop and stride (or 512 / 341). Timings are only meaningful on a GPU: on the CPU the
script runs (``--device cpu``, the smoke test) but refuses to record results unless ``--allow-cpu`` is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/NAME.py): the repository root first, not benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import ROOT, Timer, run_meta, write_json  # noqa: E402

SEG_CONFIGS = ROOT / "configs" / "seg"


def default_configs() -> list[Path]:
    """Per backbone family in configs/seg (the model name without its size: agent_pvt, dinat_s, ...), the config
    with the fewest backbone parameters (UperNet before Semantic FPN at equal size)."""
    import timm
    from mmengine.config import Config

    import zoo  # noqa: F401  (registers the zoo models)

    best: dict[str, tuple[int, str, Path]] = {}
    for path in sorted(SEG_CONFIGS.glob("*/*.py")):
        if path.parent.name in ("_base_", "demo"):
            continue
        backbone = Config.fromfile(str(path)).model.backbone
        name = backbone.get("model_name")
        if name is None:
            continue
        with torch.device("meta"):
            params = sum(p.numel() for p in timm.create_model(name, **backbone.get("model_kwargs", {})).parameters())
        family = name.removeprefix("zoo_").rsplit("_", 1)[0]
        key = (params, "0" if path.name.startswith("upernet") else "1" + path.name, path)
        if family not in best or key < best[family]:
            best[family] = key
    return [v[2] for _, v in sorted(best.items())]


def build_segmentor(config: Path, mode: str, device: torch.device):
    from mmengine.config import Config, ConfigDict
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(config))
    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    model_cfg = cfg.model
    model_cfg.backbone.pop("init_cfg", None)
    model_cfg.pop("pretrained", None)
    test_cfg = dict(model_cfg.get("test_cfg") or {})
    if mode == "whole":
        model_cfg.test_cfg = ConfigDict(mode="whole")
    else:
        model_cfg.test_cfg = ConfigDict(mode="slide", crop_size=tuple(test_cfg.get("crop_size", (512, 512))),
                                        stride=tuple(test_cfg.get("stride", (341, 341))))
    torch.manual_seed(0)
    return MODELS.build(model_cfg).to(device).eval()


def measure(model, size: tuple[int, int], *, backend: str, amp: torch.dtype | None, steps: int, warmup: int,
            device: torch.device) -> dict:
    from ops import use_backend

    h, w = size
    x = torch.randn(1, 3, h, w, device=device)
    meta = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])]

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            model.inference(x, meta)

    with use_backend(backend):
        t = Timer(device, warmup, steps).measure(step)
    return {"backend": backend, "img_per_s": steps / t.total_s, "ms_per_img": 1000 * t.total_s / steps,
            "peak_mem_mb": t.peak_mib}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW (e.g. 512x512, 1024x2048)") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seg_inference.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", type=Path, help="mmseg config (repeatable; default: one per family)")
    p.add_argument("--sizes", default="512x512,1024x2048", help="comma-separated HxW sizes")
    p.add_argument("--modes", default="whole,slide", help="test modes: whole and / or slide")
    p.add_argument("--backends", default="reference,triton")
    p.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default="bf16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--allow-cpu", action="store_true", help="record CPU numbers too (not comparable timings)")
    p.add_argument("--json", metavar="PATH", help="write the results here (default: print only)")
    args = p.parse_args(argv)
    sizes = [_size(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in ("whole", "slide")]:
        p.error(f"unknown test mode(s) {', '.join(bad)}; choose from whole, slide")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; GPU timings need one (--device cpu --backends reference runs a smoke test)")
    if args.json and device.type != "cuda" and not args.allow_cpu:
        p.error("refusing to record CPU timings as results; pass --allow-cpu to write them anyway")
    configs = args.config or default_configs()
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    rows = []
    for config in configs:
        for mode in modes:
            model = build_segmentor(config, mode, device)
            for size in sizes:
                results = [measure(model, size, backend=b, amp=amp, steps=args.steps, warmup=args.warmup,
                                   device=device) for b in backends]
                base = results[0]["img_per_s"]
                line = f"{config.stem:>52} {mode:>5} {size[0]}x{size[1]}:"
                for r in results:
                    r["speedup_vs_first"] = r["img_per_s"] / base
                    line += (f"  {r['backend']} {r['img_per_s']:7.2f} img/s"
                             + (f" {r['peak_mem_mb']:6.0f} MiB" if r["peak_mem_mb"] is not None else "")
                             + (f" x{r['speedup_vs_first']:.2f}" if r is not results[0] else ""))
                print(line, flush=True)
                rows.append({"config": str(config.relative_to(ROOT) if config.is_absolute() and ROOT in config.parents
                                           else config), "mode": mode, "size": list(size), "results": results})
            del model
    if args.json:
        meta = run_meta(device, argv, what="segmentation inference")
        write_json(args.json, dict(meta=meta, amp=args.amp, steps=args.steps, warmup=args.warmup, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
