"""Command lines of ``train.py`` and ``eval.py`` (the scripts only call :func:`train_main` / :func:`eval_main`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
"""


def _train_parser() -> argparse.ArgumentParser:
    from zoo.engine.config import DEFAULT_RECIPE

    p = argparse.ArgumentParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_TRAIN_EPILOG,
        description="Train a zoo / timm model from a recipe. Without arguments: the embedded default "
                    f"({DEFAULT_RECIPE.relative_to(DEFAULT_RECIPE.parents[2])}).")
    p.add_argument("--config", metavar="PATH", help="recipe YAML file (default: the embedded default recipe)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one recipe key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--output", metavar="DIR", help="output folder (default: the recipe's `output`)")
    p.add_argument("--resume", metavar="PATH|auto", nargs="?", const="auto",
                   help="continue a stopped run from a checkpoint, or 'auto': the output folder's last one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines instead)")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    return p


def train_main(argv: list[str] | None = None) -> int:
    from zoo.engine.checkpoint import CheckpointError, find_last_checkpoint, load_checkpoint
    from zoo.engine.config import (
        DEFAULT_RECIPE, RecipeError, apply_overrides, load_recipe, recipe_from_dict, recipe_to_yaml,
    )

    args = _train_parser().parse_args(argv)
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
    except (RecipeError, CheckpointError, FileNotFoundError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        folder = output or Path(recipe.output)
        if main_process:
            print(f"\ninterrupted; continue from the last checkpoint with: python train.py --resume auto "
                  f"--output {folder}", file=sys.stderr)
        return 130

    if not main_process:
        return 0
    m = result.metrics
    weights = "EMA weights" if result.weights == "ema" else "final weights"
    print(f"held-out top-1: {m['top1']:.2f} % (top-5 {m['top5']:.2f} %, loss {m['loss']:.4f}) on "
          f"{m['count']} images never trained on, {weights}, {result.seconds:.0f} s")
    if result.export_dir is not None:
        print(f"exported: {result.export_dir} (model.safetensors + config.json); load it with "
              f"`import zoo, timm; timm.create_model('local-dir:{result.export_dir}', pretrained=True)` "
              f"or score it with `python eval.py --checkpoint {result.export_dir}`")
    print(f"checkpoint: {result.checkpoint}")
    if result.log is not None:
        print(f"log: {result.log}" + (f", curves: {result.curves}" if result.curves else ""))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Top-1 / top-5 / loss of an exported model (folder with model.safetensors + config.json) or "
                    "a training checkpoint, on the digits held-out split (default) or an ImageFolder tree.",
        epilog="speed / memory benchmarks: python eval.py bench --help")
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
    return p


def eval_main(argv: list[str] | None = None) -> int:
    from zoo.engine.checkpoint import CheckpointError
    from zoo.engine.config import RecipeError
    from zoo.engine.evaluate import evaluate_checkpoint

    args = _eval_parser().parse_args(argv)
    try:
        m = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, split=args.split,
                                batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                                weights=args.weights, progress=not args.json)
    except (RecipeError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(m))
    else:
        print(f"top-1 {m['top1']:.2f} %  top-5 {m['top5']:.2f} %  loss {m['loss']:.4f}  "
              f"({m['count']} images, {m['data']}, {m['kind']} {args.checkpoint}, {m['weights']} weights)")
    return 0
