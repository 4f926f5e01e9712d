"""Peak memory and time of one super-resolution inference, whole-image or tiled, in a fresh process.

    python benchmarks/sr_memory.py --model hat_s_x2 --lr-size 512 [--tile 256] [--tile-overlap 32]
        [--device cpu|cuda] [--threads N] [--kwargs JSON]

One fp32 :func:`zoo.engine.sr.sr_inference` of a random ``lr-size``² image with fresh random weights (seed 0),
printed as one JSON line. CPU: the peak resident set (``ru_maxrss``) and its rise over the resident set just before
the forward -- meaningful only in a process that did nothing else before, which is why every measurement is its own
command; CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the forward.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/NAME.py): the repository root first, not benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def measure_inference_memory(model_name: str, lr_size: int, *, tile: Optional[int] = None, overlap: int = 32,
                             device: str = "cpu", model_kwargs: Optional[dict] = None, seed: int = 0) -> dict:
    """One fp32 inference of ``model_name`` on a random ``lr_size``² image in this process: seconds and peak
    memory (module docstring)."""
    import timm

    import zoo  # noqa: F401  (registers the zoo models)
    from zoo.engine.sr import sr_inference

    torch.manual_seed(seed)
    dev = torch.device(device)
    model = timm.create_model(model_name, **(model_kwargs or {})).eval().to(dev)
    scale = model.upscale
    x = torch.rand(1, 3, lr_size, lr_size, device=dev)
    before = _rss_mib()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    out = sr_inference(model, x, scale, window_size=model.window_size if tile else 1, tile=tile, overlap=overlap)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    result = dict(model=model_name, lr_size=lr_size, out_shape=list(out.shape), tile=tile,
                  overlap=overlap if tile else None, device=str(dev), threads=torch.get_num_threads(),
                  seconds=seconds, params=sum(p.numel() for p in model.parameters()))
    if dev.type == "cuda":
        result.update(peak_mib=(torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20, kind="cuda allocated")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        result.update(peak_rss_mib=peak, rss_before_mib=before, peak_mib=peak - before, kind="cpu rss")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/sr_memory.py", description="SR inference memory in a fresh "
                                "process: python benchmarks/sr_memory.py --model hat_s_x2 --lr-size 512 [--tile 256]")
    p.add_argument("--model", required=True)
    p.add_argument("--lr-size", type=int, required=True)
    p.add_argument("--tile", type=int)
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--kwargs", default="{}", help="model kwargs as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_inference_memory(args.model, args.lr_size, tile=args.tile, overlap=args.tile_overlap,
                                              device=args.device, model_kwargs=json.loads(args.kwargs))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
