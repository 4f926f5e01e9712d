"""``python -m benchmarks ARGS`` is ``python eval.py bench ARGS``."""
import sys

from benchmarks.cli import main

sys.exit(main(sys.argv[1:]))
