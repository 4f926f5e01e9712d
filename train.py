"""Train a model from a recipe; with no argument, the embedded default (configs/cls/digits_davit.yaml).

    python train.py [--config RECIPE.yaml] [--set section.key=value ...] [--output DIR] [--resume [PATH|auto]]

The logic lives in zoo.engine (cli, config, train); see `python train.py --help`.
"""
import sys

from zoo.engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
