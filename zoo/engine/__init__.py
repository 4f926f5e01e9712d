"""Training, evaluation, checkpoints and export. The engine knows models only through `timm.create_model`.

- :mod:`zoo.engine.config`: recipes (YAML validated against dataclasses), ``--set`` overrides
- :mod:`zoo.engine.train`: the classification training loop from timm's factories
- :mod:`zoo.engine.evaluate`: top-1 / top-5 / loss of a model, an export or a checkpoint
- :mod:`zoo.engine.checkpoint`: atomic training checkpoints read with ``weights_only=True``
- :mod:`zoo.engine.export`: ``model.safetensors`` + ``config.json`` loadable with ``timm.create_model('local-dir:...')``
- :mod:`zoo.engine.cli`: the command lines of ``train.py`` and ``eval.py``
- :mod:`zoo.engine.benchmark`, :mod:`zoo.engine.flops`: speed / memory benchmarks (``eval.py bench``), costs

Submodules are imported on use, so ``import zoo.engine`` stays light.
"""
