"""Training, evaluation, checkpoints and export. The engine knows models only through `timm.create_model`.

- :mod:`zoo.engine.schema`, :mod:`zoo.engine.config`: recipes (YAML validated against dataclasses), ``--set``
- :mod:`zoo.engine.tasks`: one object per task (cls, sr, seg) that training, validation and the scripts ask
- :mod:`zoo.engine.setup`: device, seeds, model, data config, autocast, starting weights (shared by every task)
- :mod:`zoo.engine.train`: the training loop from timm's factories
- :mod:`zoo.engine.evaluate`: scores of an export or a checkpoint
- :mod:`zoo.engine.sr`, :mod:`zoo.engine.seg`: super-resolution metrics; mmsegmentation's Runner
- :mod:`zoo.engine.checkpoint`: atomic training checkpoints read with ``weights_only=True``
- :mod:`zoo.engine.export`: ``model.safetensors`` + ``config.json`` loadable with ``timm.create_model('local-dir:...')``
- :mod:`zoo.engine.cli`: the command lines of ``train.py`` and ``eval.py``
- :mod:`zoo.engine.flops`: FLOP counts of models (the README's table)

Submodules are imported on use, so ``import zoo.engine`` stays light.
"""
