"""What a run reports while it trains: a JSONL log, curves as a PNG, an optional TensorBoard writer.

``OUTPUT/log.jsonl`` gets one JSON object per optimizer step (``{"kind": "step", "epoch", "step", "loss", "lr",
"img_per_s", "mem_mb", "time"}``; `loss` is averaged over the step's micro-batches and processes) and one per
evaluation (``{"kind": "eval", "epoch", "step", "top1", "top5", "loss", ...}``). A resumed run first drops the
lines written after its checkpoint, so the log of a run killed and resumed reads like an uninterrupted one.
At the end ``OUTPUT/curves.png`` plots loss, lr and held-out top-1 when matplotlib is installed
(``pip install matplotlib``; without it the run says so and writes no PNG). ``train.tensorboard: true`` also
writes TensorBoard event files to ``OUTPUT/tensorboard`` (needs ``pip install tensorboard``).
Only rank 0 writes any of these.
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["CURVES_NAME", "LOG_NAME", "RunLog", "memory_mb", "plot_curves", "read_log"]

LOG_NAME = "log.jsonl"
CURVES_NAME = "curves.png"


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocator peak on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (a last line cut short by a killed process is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLog:
    """Rank 0's writer of ``log.jsonl`` (+ TensorBoard). On other ranks every method does nothing."""

    def __init__(self, output_dir: Path, *, enabled: bool, resume_step: int | None, tensorboard: bool):
        self.path = output_dir / LOG_NAME
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():  # keep what happened up to the checkpoint, drop what is recomputed
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step
                    and not (r.get("kind") == "eval" and r.get("step", 0) == resume_step and r.get("partial"))]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a", buffering=1)
        if tensorboard:
            self.tb = _tensorboard_writer(output_dir / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = "train" if record.get("kind") == "step" else "eval"
            for key, value in record.items():
                if key not in ("kind", "step", "epoch", "time") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{key}", value, record.get("step", 0))

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeError(f"train.tensorboard is true but TensorBoard is not installed ({e}); "
                           f"pip install tensorboard, or set train.tensorboard=false") from None
    return SummaryWriter(str(folder))


def plot_curves(log_path: Path, png_path: Path) -> Path | None:
    """Loss / lr per step and held-out top-1 per evaluation from `log_path` as a PNG; None (nothing written)
    when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from zoo.files import atomic_write

    records = read_log(log_path)
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8)
    axes[0].set(title="training loss", xlabel="optimizer step")
    axes[1].plot([r["step"] for r in steps], [r["lr"] for r in steps], lw=0.8)
    axes[1].set(title="learning rate", xlabel="optimizer step")
    axes[2].plot([r["epoch"] for r in evals], [r["top1"] for r in evals], marker="o")
    axes[2].set(title="held-out top-1 (%)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return png_path
