"""Semantic segmentation through mmsegmentation's own Runner: what ``train.py`` / ``eval.py`` run for an mmseg config.

An mmseg config (a ``.py`` file, e.g. ``configs/seg/demo/upernet_zoo_davit_digits.py``) is loaded with
mmengine's ``Config.fromfile``; ``--set key=value`` overrides are parsed as YAML (as for the classification
recipes) and merged as mmengine cfg-options (``model.backbone.drop_path_rate=0.2``,
``train_dataloader.dataset.data_root=DIR``, list items as ``a.0.b``). Training, validation, checkpoints, logs
and resuming are mmengine's ``Runner``; the metrics are mmseg's ``IoUMetric`` (aAcc / mIoU / mAcc, in %).

Several processes: under torchrun (``WORLD_SIZE`` > 1) the launcher is ``pytorch``, as mmseg's
``tools/train.py --launcher pytorch``. With CUDA, mmengine starts the process group from the config's
``env_cfg.dist_cfg`` (NCCL); without CUDA it is started here with gloo and the model is wrapped in DDP
without ``device_ids`` (mmengine would otherwise call ``torch.cuda.set_device``).

Checkpoints and torch >= 2.6: ``torch.load`` reads with ``weights_only=True`` (mmengine 0.10 calls it without
the argument), and an mmengine checkpoint holds, besides tensors, the message hub's ``HistoryBuffer`` objects:
NumPy arrays and scalars, and references to HistoryBuffer's statistics functions pickled as
``getattr(HistoryBuffer, 'min')``. Nothing is ever loaded with ``weights_only=False``: every Runner call here runs
inside ``torch.serialization.safe_globals(seg_safe_global_types())``, which allows exactly those mmengine / NumPy
types, and ``getattr`` only as a stand-in that returns those four functions and refuses anything else (the real
``getattr`` would reach arbitrary code), only for the duration of the call. A checkpoint named by the user or the
config (``--checkpoint``, ``--resume``, ``load_from``) is first read here with ``weights_only=True`` under the same
allowlist, so it is checked even under an mmengine version that would load it with ``weights_only=False``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from zoo.engine.distributed import launch_env
from zoo.engine.schema import parse_override
from zoo.errors import InputError, UserError

__all__ = ["MMSegNotInstalled", "SegTrainResult", "check_checkpoint", "eval_cli", "evaluate_seg", "is_seg_config",
           "load_seg_config", "seg_safe_global_types", "seg_safe_globals", "train_cli", "train_seg"]

def is_seg_config(path: str | os.PathLike | None) -> bool:
    """True when `path` names an mmsegmentation config (a Python file), as opposed to a YAML recipe."""
    return path is not None and str(path).endswith(".py")


class MMSegNotInstalled(UserError, ImportError):
    """mmsegmentation (or mmengine / mmcv) is missing."""


def _require_mmseg():
    try:
        import mmengine  # noqa: F401
        import mmseg  # noqa: F401
    except ModuleNotFoundError as e:
        raise MMSegNotInstalled(
            f"semantic segmentation needs mmsegmentation ({e.name} is not installed); install it with "
            "`python scripts/install_seg.py`") from None


_STATISTICS = ("min", "max", "current", "mean")


def _history_buffer_statistic(owner: Any, name: str) -> Any:
    """What ``getattr`` may do while an mmengine checkpoint is unpickled: fetch one of HistoryBuffer's default
    statistics functions (its pickled state names them as ``getattr(HistoryBuffer, 'min')``); nothing else."""
    import pickle

    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) in a checkpoint: only HistoryBuffer's statistics "
                                 f"{', '.join(_STATISTICS)} are allowed")


def seg_safe_global_types() -> list[Any]:
    """The non-tensor globals of an mmengine checkpoint: the message hub's HistoryBuffer, the NumPy arrays and
    scalars inside it, and ``getattr`` replaced by :func:`_history_buffer_statistic` (the real ``getattr`` would
    reach anything)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    # the array / scalar dtypes are rebuilt as instances of these classes (numpy.dtypes.Float64DType, ...)
    dtype_classes = sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}, key=lambda t: t.__name__)
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes,
            (_history_buffer_statistic, "builtins.getattr")]


@contextlib.contextmanager
def seg_safe_globals() -> Iterator[None]:
    """``torch.load(weights_only=True)`` accepts mmengine checkpoints inside this block (and only there)."""
    import torch.serialization

    with torch.serialization.safe_globals(seg_safe_global_types()):
        yield


def check_checkpoint(path: str | os.PathLike) -> Path:
    """`path` as a Path once it is known to load with ``weights_only=True`` and the mmengine allowlist."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with seg_safe_globals():
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise ValueError(f"checkpoint {str(path)!r} cannot be loaded safely (weights_only=True with the mmengine "
                         f"allowlist): {e}") from None
    return path


def _lookup(cfg, keys: list[str]) -> Any:
    """The config value at `keys` (list items by index), or the function itself as a not-found marker."""
    node = dict(cfg.items())
    for key in keys:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _lookup
    return node


def load_seg_config(config_path: str | os.PathLike, overrides: Sequence[str] = ()):
    """The mmengine ``Config`` in `config_path` with ``key=value`` `overrides` (values parsed as YAML) merged."""
    _require_mmseg()
    from mmengine.config import Config


    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"mmseg config {str(path)!r} does not exist")
    cfg = Config.fromfile(str(path))
    options = {}
    for item in overrides:
        keys, value = parse_override(item)
        if isinstance(value, dict) and not isinstance(_lookup(cfg, keys), (dict, type(_lookup))):
            value = dict(value, _delete_=True)  # a mapping replaces a null / scalar (mmengine would refuse to merge)
        options[".".join(keys)] = value
    if options:
        cfg.merge_from_dict(options, allow_list_keys=True)
    return cfg


def _check_data_roots(cfg) -> None:
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = (cfg.get(loader) or {}).get("dataset") or {}
        root = dataset.get("data_root")
        if root and not Path(root).is_dir():
            demo = "seg_digits" in str(root)  # the demo config's data set, made by zoo/data/seg_synth.py
            raise FileNotFoundError(
                f"{loader}.dataset.data_root {str(root)!r} does not exist"
                + (f"; make the demo data set with: python -m zoo.data.seg_synth {root}" if demo else "")
                + f" (or point it elsewhere with --set {loader}.dataset.data_root=DIR)")


def _pretraining_command(checkpoint: Path) -> str | None:
    """The ``train.py`` command whose classification recipe (configs/cls/*.yaml) exports to `checkpoint`, if any."""
    import yaml

    from zoo.engine.schema import DEFAULT_RECIPE

    folder = checkpoint.parent if checkpoint.name == "model.safetensors" else checkpoint
    if folder.name != "export":
        return None
    folder = folder.parent
    for recipe in sorted(DEFAULT_RECIPE.parent.glob("*.yaml")):
        try:
            output = yaml.safe_load(recipe.read_text()).get("output")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if output and Path(output) == folder:
            if recipe == DEFAULT_RECIPE:
                return "python train.py"
            return f"python train.py --config {recipe.relative_to(DEFAULT_RECIPE.parents[2])}"
    return None


def _check_pretrained(cfg) -> None:
    """A backbone ``init_cfg`` checkpoint that is a local path must exist (mmengine would fail deep inside the
    Runner); when a classification recipe here exports to it, the error names the command that writes it."""
    init = ((cfg.get("model") or {}).get("backbone") or {}).get("init_cfg")
    checkpoint = init.get("checkpoint") if isinstance(init, dict) else None
    if not checkpoint or "://" in str(checkpoint) or Path(checkpoint).exists():
        return
    command = _pretraining_command(Path(checkpoint))
    raise FileNotFoundError(
        f"model.backbone.init_cfg.checkpoint {str(checkpoint)!r} does not exist"
        + (f"; the classification pretraining writes it: {command}" if command else "")
        + " (or start from random weights with --set model.backbone.init_cfg=null)")


@contextlib.contextmanager
def _torch_threads(cfg) -> Iterator[None]:
    """The config's top-level ``threads`` (torch intra-op threads; absent or None: torch's default) while the
    Runner runs, restored afterwards."""
    import torch

    threads = cfg.get("threads")
    if threads is None:
        yield
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads={threads!r} in the config: expected an integer >= 1 (or null: torch's default)")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setup_launcher(cfg) -> None:
    """mmseg's ``--launcher`` from torchrun's environment; on CPU the gloo process group is started here."""
    import torch
    import torch.distributed as dist

    if not launch_env().distributed:
        cfg.launcher = "none"
        return
    cfg.launcher = "pytorch"
    if torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    wrapper = cfg.get("model_wrapper_cfg") or {"type": "MMDistributedDataParallel"}
    wrapper["device_ids"] = None  # a CPU module takes no device_ids
    cfg.model_wrapper_cfg = wrapper


def _build_runner(cfg):
    import uuid

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    # mmengine keeps one Visualizer per name for the whole process, with the save_dir of the run that made it: a
    # second run in the same process (tests, notebooks) would log into the first one's folder without a new name
    if isinstance(cfg.get("visualizer"), dict):
        cfg.visualizer["name"] = f"{cfg.visualizer.get('name', 'visualizer')}_{uuid.uuid4().hex[:8]}"
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


@dataclass
class SegTrainResult:
    work_dir: Path
    checkpoint: Path | None  # the last checkpoint written (None when the schedule saved none)
    metrics: dict[str, float]  # the last validation's metrics (empty when none ran)
    picture: Path | None = None  # image | ground truth | prediction of a few validation images (None: no validation)


def _draw_predictions(runner, dataset, path: Path, num_images: int, title: str) -> Path | None:
    """The prediction grid of :func:`zoo.engine.seg_vis.save_prediction_grid` (main process only)."""
    if num_images <= 0 or not launch_env().is_main:
        return None
    from zoo.engine.seg_vis import save_prediction_grid

    return save_prediction_grid(runner.model, dataset, path, num_images=num_images, title=title)


def _last_checkpoint(work_dir: Path) -> Path | None:
    marker = work_dir / "last_checkpoint"
    return Path(marker.read_text().strip()) if marker.is_file() else None


def train_seg(config_path: str | os.PathLike, overrides: Sequence[str] = (), work_dir: str | os.PathLike | None = None,
              resume: str | os.PathLike | None = None, vis_images: int = 4) -> SegTrainResult:
    """Train with mmengine's Runner from the mmseg config `config_path`.

    work_dir: ``--output``; default the config's ``work_dir``, else the checkpoint's folder when resuming from
    a path, else ``output/<config name>``. resume: None (new run; the config's ``load_from`` still applies),
    ``"auto"`` (the last checkpoint in work_dir; a new run when there is none) or a checkpoint path.
    vis_images: when the run validated, the first this many validation images with their ground truth and the
    final model's predictions are drawn into ``work_dir/val_predictions_iter_N.png`` (0: no picture).
    """
    cfg = load_seg_config(config_path, overrides)
    if resume not in (None, "auto"):
        resume = check_checkpoint(resume)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(resume.parent if isinstance(resume, Path) else Path("output") / Path(config_path).stem)
    if resume == "auto":
        cfg.resume, cfg.load_from = True, None
        last = _last_checkpoint(Path(cfg.work_dir))
        if last is not None:
            check_checkpoint(last)
        elif os.environ.get("RANK", "0") in ("0", ""):
            print(f"resume auto: no checkpoint in {cfg.work_dir}; starting a new run", file=sys.stderr)
    elif resume is not None:
        cfg.resume, cfg.load_from = True, str(resume)
    else:
        cfg.resume = False
        if cfg.get("load_from") and "://" not in str(cfg.load_from):  # a URL is read inside seg_safe_globals()
            check_checkpoint(cfg.load_from)
    _check_data_roots(cfg)
    _check_pretrained(cfg)  # (mmengine initialises the weights before it resumes, too)
    _setup_launcher(cfg)

    _check_num_images(vis_images)
    work = Path(cfg.work_dir)
    picture = None
    with seg_safe_globals(), _torch_threads(cfg):
        runner = _build_runner(cfg)
        runner.train()
        metrics = {}
        for key, buffer in runner.message_hub.log_scalars.items():
            if key.startswith("val/") and key[4:] in ("aAcc", "mIoU", "mAcc"):
                metrics[key[4:]] = float(buffer.current())
        if metrics:
            picture = _draw_predictions(
                runner, runner.val_dataloader.dataset, work / f"val_predictions_iter_{runner.iter}.png", vis_images,
                f"{Path(config_path).stem}, iteration {runner.iter}: mIoU {metrics.get('mIoU', float('nan')):.2f} %")
    return SegTrainResult(work_dir=work, checkpoint=_last_checkpoint(work), metrics=metrics, picture=picture)


def _check_num_images(num_images: Any) -> None:
    if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 0:
        raise ValueError(f"number of images to draw: {num_images!r}, expected an integer >= 0 (0: no picture)")


def evaluate_seg(config_path: str | os.PathLike, checkpoint: str | os.PathLike, overrides: Sequence[str] = (),
                 work_dir: str | os.PathLike | None = None, tta: bool = False,
                 picture: str | os.PathLike | None = None, vis_images: int = 4) -> dict[str, float]:
    """``runner.test()`` of the mmseg config with the weights of `checkpoint`: ``{'aAcc', 'mIoU', 'mAcc'}`` in %
    (mmseg's IoUMetric on the config's ``test_dataloader``). `tta`: multi-scale / flip testing with the config's
    ``tta_pipeline`` and ``tta_model``, as mmseg's ``tools/test.py --tta``. Logs go to `work_dir` (default: a
    temporary folder, removed afterwards). `picture`: a PNG path; the first `vis_images` test images, their ground
    truth and the model's predictions are drawn into it after scoring (None: no picture; none with `tta`)."""
    _check_num_images(vis_images)
    cfg = load_seg_config(config_path, overrides)
    cfg.load_from, cfg.resume = str(check_checkpoint(checkpoint)), False
    if tta:
        missing = [k for k in ("tta_pipeline", "tta_model") if k not in cfg]
        if missing:
            raise ValueError(f"--tta needs {' and '.join(missing)} in the config {str(config_path)!r}")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    _check_data_roots(cfg)
    _setup_launcher(cfg)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-seg-eval-"))
        cfg.work_dir = str(work_dir)
        with seg_safe_globals(), _torch_threads(cfg):
            runner = _build_runner(cfg)
            metrics = runner.test()
            if picture is not None and not tta:  # (TTA items are lists of augmented views: not drawn)
                _draw_predictions(runner, runner.test_dataloader.dataset, Path(picture), vis_images,
                                  f"{Path(config_path).stem}, {Path(checkpoint).name}: mIoU {metrics['mIoU']:.2f} %")
    return {k: float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------------------------
# Command lines (zoo/engine/cli.py hands an mmseg config here, through the task registry)

# what a segmentation run reports as the user's to fix: mmseg missing, a missing file, a bad config or data set
# (mmengine and mmseg raise ValueError for those; RecipeError is one too)
_SEG_ERRORS = (MMSegNotInstalled, FileNotFoundError, ValueError)


def _as_user_error(e: Exception) -> UserError:
    """`e` as a UserError, so that ``run_cli`` (train.py / eval.py) prints one line, and --debug its traceback."""
    return e if isinstance(e, UserError) else InputError(str(e))


def train_cli(args) -> int:
    """``train.py --config CONFIG.py``: `args` as parsed by ``train.py``'s parser (config, overrides, output,
    resume, print_config)."""
    main_process = os.environ.get("RANK", "0") in ("0", "")
    try:
        if args.print_config:
            if main_process:
                print(load_seg_config(args.config, args.overrides).pretty_text)
            return 0
        result = train_seg(args.config, args.overrides, args.output, args.resume)
    except _SEG_ERRORS as e:
        raise _as_user_error(e) from e
    if main_process:
        if result.metrics:
            print("validation: " + "  ".join(f"{k} {v:.2f} %" for k, v in result.metrics.items()))
        if result.picture is not None:
            print(f"predictions (image | ground truth | prediction): {result.picture}")
        print(f"checkpoint: {result.checkpoint}" if result.checkpoint else f"no checkpoint saved in {result.work_dir}")
        print(f"work dir (logs, checkpoints): {result.work_dir}")
    return 0


def _eval_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="eval.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="mIoU / mAcc / aAcc (mmseg's IoUMetric) of a segmentation checkpoint on the test set of an "
                    "mmsegmentation config, through mmengine's Runner.test().",
        epilog="example:\n  python eval.py --config configs/seg/demo/upernet_zoo_davit_digits.py \\\n"
               "      --checkpoint output/upernet_zoo_davit_digits/iter_3000.pth")
    p.add_argument("--config", metavar="CONFIG.py", required=True, help="mmsegmentation config (Python file)")
    p.add_argument("--checkpoint", metavar="PATH", required=True, help="checkpoint written by train.py (.pth)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one config key (mmengine cfg-options, value parsed as YAML), "
                        "e.g. --set test_dataloader.dataset.data_root=DIR (repeatable)")
    p.add_argument("--output", metavar="DIR", help="folder for the Runner's logs (default: a temporary one)")
    p.add_argument("--tta", action="store_true",
                   help="multi-scale / flip testing with the config's tta_pipeline and tta_model")
    p.add_argument("--vis", metavar="N", type=int, default=4,
                   help="draw the first N test images, their ground truth and the predictions into a PNG (default "
                        "%(default)s; 0: none): --vis-out, default next to the checkpoint as <name>_predictions.png")
    p.add_argument("--vis-out", metavar="PNG", help="where to write the picture of --vis")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object (the last line)")
    return p


def eval_cli(argv: Sequence[str]) -> int:
    """``eval.py --config CONFIG.py --checkpoint CKPT.pth [--set KEY=VALUE ...] [--output DIR] [--json]``."""
    import json

    parser = _eval_parser()
    args = parser.parse_args(list(argv))
    if not is_seg_config(args.config):
        parser.error(f"--config {args.config!r} is not an mmsegmentation config (.py); classification and "
                     "super-resolution checkpoints are scored without --config")
    if args.vis < 0:
        parser.error(f"--vis {args.vis}: expected a number of images >= 0 (0: no picture)")
    picture = None
    if args.vis > 0 and not args.tta:
        checkpoint = Path(args.checkpoint)
        picture = Path(args.vis_out) if args.vis_out else checkpoint.with_name(f"{checkpoint.stem}_predictions.png")
    try:
        metrics = evaluate_seg(args.config, args.checkpoint, args.overrides, args.output, tta=args.tta,
                               picture=picture, vis_images=max(args.vis, 1))
    except _SEG_ERRORS as e:
        raise _as_user_error(e) from e
    if not launch_env().is_main:
        return 0
    if picture is not None:
        print(f"predictions (image | ground truth | prediction): {picture}")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"mIoU {metrics['mIoU']:.2f} %  mAcc {metrics['mAcc']:.2f} %  aAcc {metrics['aAcc']:.2f} %  "
              f"({args.config}, {args.checkpoint})")
    return 0
