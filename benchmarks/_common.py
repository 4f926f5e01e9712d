"""What the stand-alone benchmark scripts share: timing a callable on the device, and the JSON record's header."""
from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]


def time_calls(fn: Callable[[], object], *, steps: int, warmup: int, device: torch.device) -> dict:
    """Run `fn` `warmup` times, then time `steps` calls (CUDA events on a GPU, wall clock elsewhere).

    Returns ``seconds`` (for the timed calls), ``warmup_s`` and ``peak_mem_mb`` (CUDA only: the peak allocated
    during the timed calls, the warm-up excluded).
    """
    cuda = device.type == "cuda"
    t_warm = time.perf_counter()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    warm_s = time.perf_counter() - t_warm
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
    else:
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "warmup_s": warm_s,
            "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}


def write_record(path: str | Path, what: str, device: torch.device, argv: list[str] | None, **fields) -> None:
    """One run's JSON file: :func:`record_header` followed by the script's own `fields`."""
    record = {**record_header(what, device, argv), **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")


def record_header(what: str, device: torch.device, argv: list[str] | None) -> dict:
    """Device, versions, commit, date and command line of a benchmark run, for its JSON file."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "what": what,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "commit": commit, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
