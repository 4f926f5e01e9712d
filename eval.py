"""Evaluate an export folder or a training checkpoint; `bench` runs the speed / memory benchmarks.

    python eval.py --checkpoint PATH [--data-dir DIR] [--split val]
    python eval.py bench ...

The logic lives in zoo.engine (cli, evaluate) and, for `bench`, in the benchmarks package at the repository root
(benchmarks/cli.py); see `python eval.py --help`.
"""
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:
        try:
            from benchmarks.cli import main as bench_main  # imported only when asked for
        except ModuleNotFoundError as e:
            if e.name not in ("benchmarks", "benchmarks.cli"):
                raise
            print("eval.py bench: error: benchmarks/cli.py is missing from this checkout", file=sys.stderr)
            return 2
        return bench_main(argv[1:])
    from zoo.engine.cli import eval_main

    return eval_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
