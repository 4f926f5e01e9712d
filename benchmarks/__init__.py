"""Benchmarks of the zoo, kept out of the library (imported from the repository root, as timm keeps its
``benchmark.py``): nothing under ``zoo/`` or ``ops/`` imports this package.

- :mod:`benchmarks.harness`: the one timer, the environment header of every JSON record, the roofline, the check
- :mod:`benchmarks.ops`: op benchmarks, one module per op (``official`` vs the best alternative vs ``ops``)
- :mod:`benchmarks.models`: whole models per ops backend
- :mod:`benchmarks.cli`: ``python eval.py bench ...`` / ``python -m benchmarks ...``
- ``train_throughput.py``, ``seg_inference.py``, ``hat_vs_official.py``: stand-alone scripts on the same harness;
  ``sr_memory.py``: the peak memory of one SR inference, whole or tiled, in a fresh process
- ``results/``: committed runs, one file per run
"""
