"""Command lines of ``train.py`` and ``eval.py`` (the scripts only call :func:`train_main` / :func:`eval_main`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from zoo.engine.seg import is_seg_config
from zoo.engine.tasks import TASKS
from zoo.errors import run_cli

__all__ = ["eval_main", "train_main"]

_TRAIN_EPILOG = """\
recipes: YAML files validated on load (zoo/engine/config.py); an unknown key is an error listing the valid ones.
overrides: --set section.key=value, repeatable, value parsed as YAML:
  --set train.epochs=3 --set optim.lr=1e-3 --set model.kwargs.depths=[1,1,2,1] --set ema.enabled=true
resume: --resume auto continues from OUTPUT/checkpoint-last.pth (a new run when there is none);
  --resume PATH continues from that checkpoint (its folder is the output folder unless --output is given).
  Without --config, a resumed run uses the recipe stored in the checkpoint (plus any --set).
several processes (DDP; --set train.parallel=fsdp to shard): torchrun starts one process per GPU
  (gloo on the CPU); data.batch_size is per process, only rank 0 writes checkpoints and logs:
  torchrun --standalone --nproc_per_node 8 train.py --config configs/cls/davit_tiny.yaml
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 --rdzv_id RUN \
      train.py --config configs/cls/davit_tiny.yaml                         # the same line on every node
examples:
  python train.py                                          # embedded default: DaViT on digits, CPU, minutes
  python train.py --config configs/cls/digits_davit.yaml --set train.epochs=5 --output output/quick
  python train.py --resume auto
semantic segmentation: a --config ending in .py is an mmsegmentation config, trained by mmengine's Runner
  (zoo/engine/seg.py; install with python scripts/install_seg.py); --set key=value are mmengine cfg-options
  (value parsed as YAML), --output is the work dir, --resume [auto|PATH] as above (mmengine checkpoints):
  python -m zoo.data.seg_synth data/seg_digits                     # the demo's data set, seconds
  python train.py --config configs/seg/demo/upernet_zoo_davit_digits.py --output output/seg_demo
  torchrun --standalone --nproc_per_node 8 train.py --config configs/seg/davit/upernet_davit_tiny_ade20k_512x512_160k.py
"""


def _train_parser() -> argparse.ArgumentParser:
    from zoo.engine.config import DEFAULT_RECIPE

    p = argparse.ArgumentParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_TRAIN_EPILOG,
        description="Train a zoo / timm model from a recipe. Without arguments: the embedded default "
                    f"({DEFAULT_RECIPE.relative_to(DEFAULT_RECIPE.parents[2])}).")
    p.add_argument("--config", metavar="PATH", help="recipe YAML file (default: the embedded default recipe), or an "
                                                    "mmsegmentation config (.py)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one recipe key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--output", metavar="DIR", help="output folder (default: the recipe's `output`)")
    p.add_argument("--resume", metavar="PATH|auto", nargs="?", const="auto",
                   help="continue a stopped run from a checkpoint, or 'auto': the output folder's last one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines instead)")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    return p


def train_main(argv: list[str] | None = None) -> int:
    """``train.py``: user errors end in one line on stderr and exit status 2 (``--debug``: the traceback)."""
    return run_cli("train.py", _train_main, sys.argv[1:] if argv is None else argv)


def _train_main(argv: list[str]) -> int:
    from zoo.engine.checkpoint import find_last_checkpoint, load_checkpoint
    from zoo.engine.config import (
        DEFAULT_RECIPE, apply_overrides, load_recipe, recipe_from_dict, recipe_to_yaml,
    )

    args = _train_parser().parse_args(argv)
    if is_seg_config(args.config):  # an mmsegmentation config: mmengine's Runner trains it
        return TASKS["seg"].train_cli(args)
    main_process = os.environ.get("RANK", "0") in ("0", "")  # torchrun: only rank 0 reports
    try:
        recipe = load_recipe(args.config or DEFAULT_RECIPE, args.overrides)
        output = Path(args.output) if args.output else None
        resume = None
        if args.resume == "auto":
            folder = output or Path(recipe.output)
            resume = find_last_checkpoint(folder)
            if resume is None and main_process:
                print(f"--resume auto: no checkpoint in {folder}; starting a new run", file=sys.stderr)
        elif args.resume:
            resume = Path(args.resume)
            output = output or resume.parent
        if resume is not None and not args.config:
            stored = load_checkpoint(resume)["recipe"]
            source = f"the recipe stored in {str(resume)!r}" + (" with --set overrides" if args.overrides else "")
            recipe = recipe_from_dict(apply_overrides(stored, args.overrides), source)
        if args.print_config:
            if main_process:
                print(recipe_to_yaml(recipe), end="")
            return 0

        from zoo.engine.train import train
        result = train(recipe, output, resume=resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        folder = output or Path(recipe.output)
        if main_process:
            print(f"\ninterrupted; continue from the last checkpoint with: python train.py --resume auto "
                  f"--output {folder}", file=sys.stderr)
        return 130

    if not main_process:
        return 0
    task = TASKS[recipe.task]
    weights = "EMA weights" if result.weights == "ema" else "final weights"
    print(task.summary(recipe, result.metrics, weights, result.seconds))
    if result.export_dir is not None:
        score = f"python eval.py --checkpoint {result.export_dir}{task.eval_hint(recipe)}"
        print(f"exported: {result.export_dir} (model.safetensors + config.json); load it with "
              f"`import zoo, timm; timm.create_model('local-dir:{result.export_dir}', pretrained=True)` "
              f"or score it with `{score}`")
    print(f"checkpoint: {result.checkpoint}")
    if result.log is not None:
        print(f"log: {result.log}" + (f", curves: {result.curves}" if result.curves else ""))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Top-1 / top-5 / loss of an exported model (folder with model.safetensors + config.json) or "
                    "a training checkpoint, on the digits held-out split (default) or an ImageFolder tree; for a "
                    "super-resolution model (detected, or --task sr) PSNR / SSIM on the Y channel with a border crop "
                    "of the scale (BasicSR's metrics) on a folder of HR images (bicubic LR) or paired HR / LR folders.",
        epilog="super-resolution examples:\n"
               "  python eval.py --checkpoint output/demo_hat_x4/export            # its held-out photographs\n"
               "  python eval.py --checkpoint EXPORT --data-dir Set5/GTmod2 --lr-dir Set5/LRbicx2\n"
               "  python eval.py --checkpoint HAT_SRx2.pth --model hat_x2 --data-dir Set5/HR --tile 256 \\\n"
               "      --tile-overlap 32                                            # official BasicSR weights\n"
               "semantic segmentation (mIoU / mAcc / aAcc through mmseg's Runner; options: "
               "python eval.py --config X.py --help):\n"
               "  python eval.py --config configs/seg/demo/upernet_zoo_davit_digits.py --checkpoint ITER_N.pth\n"
               "speed / memory benchmarks: python eval.py bench --help")
    p.add_argument("--checkpoint", metavar="PATH", required=True,
                   help="export folder (model.safetensors + config.json) or training checkpoint (.pth)")
    p.add_argument("--data-dir", metavar="DIR", help="ImageFolder root: DIR/<split>/<class>/<images>")
    p.add_argument("--split", default="val", help="sub-folder of --data-dir to score (default: val)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                   help="training checkpoint: EMA or raw weights (auto: EMA when present)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    sr = p.add_argument_group("super-resolution")
    sr.add_argument("--task", choices=("auto", *_EVALUATE), default="auto",
                    help="auto: from the model's config / recipe (default)")
    sr.add_argument("--lr-dir", metavar="DIR", help="LR images paired with the HR images of --data-dir "
                    "(default: bicubic LR made from the HR)")
    sr.add_argument("--filename-tmpl", default="{}", metavar="TMPL",
                    help="LR file stem from the HR stem, e.g. '{}x2' (default '{}')")
    sr.add_argument("--scale", type=int, help="upscaling factor (default: the model's)")
    sr.add_argument("--tile", type=int, metavar="N", help="run the LR input in N x N tiles (large images)")
    sr.add_argument("--tile-overlap", type=int, default=32, metavar="M", help="context pixels around each tile")
    sr.add_argument("--model", metavar="NAME", help="architecture for a plain weights file (e.g. BasicSR's .pth)")
    sr.add_argument("--bicubic", action="store_true", help="also report bicubic upscaling on the same images")
    return p


def _eval_sr(args) -> tuple[dict, str]:
    from zoo.engine.evaluate import evaluate_sr_checkpoint

    m = evaluate_sr_checkpoint(
        args.checkpoint, data_dir=args.data_dir, lr_dir=args.lr_dir, filename_tmpl=args.filename_tmpl,
        scale=args.scale, tile=args.tile, tile_overlap=args.tile_overlap, model_name=args.model, device=args.device,
        weights=args.weights, bicubic=args.bicubic, progress=not args.json)
    tiles = f", tiles {m['tile']} + {m['tile_overlap']} overlap" if m["tile"] else ""
    text = (f"PSNR {m['psnr']:.4f} dB  SSIM {m['ssim']:.4f}  (Y channel, border {m['scale']}, x{m['scale']}, "
            f"{m['count']} images, {m['data']}{tiles}; {m['kind']} {args.checkpoint}, {m['weights']} weights)")
    if args.bicubic:
        text += f"\nbicubic upscaling: PSNR {m['bicubic_psnr']:.4f} dB  SSIM {m['bicubic_ssim']:.4f}"
    return m, text


def _eval_cls(args) -> tuple[dict, str]:
    from zoo.engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, split=args.split, batch_size=args.batch_size,
                            num_workers=args.workers, device=args.device, weights=args.weights,
                            progress=not args.json)
    return m, (f"top-1 {m['top1']:.2f} %  top-5 {m['top5']:.2f} %  loss {m['loss']:.4f}  "
               f"({m['count']} images, {m['data']}, {m['kind']} {args.checkpoint}, {m['weights']} weights)")


# eval.py's scoring of a saved model per recipe task: (metrics, report); the saved-model readers of
# zoo.engine.evaluate validate the stored recipe, so they sit above the task registry, not in it
_EVALUATE = {"cls": _eval_cls, "sr": _eval_sr}


def eval_main(argv: list[str] | None = None) -> int:
    """``eval.py``: user errors end in one line on stderr and exit status 2 (``--debug``: the traceback)."""
    return run_cli("eval.py", _eval_main, sys.argv[1:] if argv is None else argv)


def _eval_main(argv: list[str]) -> int:
    from zoo.engine.evaluate import saved_task

    if any(a == "--config" or a.startswith("--config=") for a in argv):  # segmentation: mmseg config + Runner
        return TASKS["seg"].eval_cli(argv)
    args = _eval_parser().parse_args(argv)
    task = args.task
    if task == "auto":
        task = "sr" if args.model else saved_task(args.checkpoint)
    metrics, report = _EVALUATE.get(task, _eval_cls)(args)
    print(json.dumps(metrics) if args.json else report)
    return 0
