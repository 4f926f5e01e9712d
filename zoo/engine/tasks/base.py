"""What a task tells the engine: the training loop (:mod:`zoo.engine.train`), the recipe validator and the command
lines ask the task object for everything that differs between tasks, and never test the task's name."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo.engine.schema import Recipe

__all__ = ["Task"]

Need = Callable[[bool, str, str, Any], None]  # need(ok, key, what was expected, value): a RecipeError when not ok


class Task:
    """One task. `recipe` tasks run through train.py's loop from a YAML recipe and implement every hook below;
    the others (segmentation, whose loop is mmseg's Runner) only answer the validator with `recipe_help`."""
    name: str = ""
    recipe: bool = True
    recipe_help: str = ""  # why a YAML recipe cannot ask for a non-recipe task, and what to run instead
    metric: str = ""  # the held-out metric of the progress bar and the raw-weights score under EMA (`model_<metric>`)
    held_out: tuple[str, ...] = ()  # the metrics written into an export's config.json
    classes: bool = True  # the model's head is sized by the data set's classes

    def check_recipe(self, recipe: Recipe, need: Need) -> None:
        """Recipe checks of this task, after the generic ones (:mod:`zoo.engine.config`)."""

    def datasets(self, recipe: Recipe, global_batch: int) -> tuple[Any, Any]:
        """(train, held-out) data sets; each has ``classes`` (label names, empty without classes)."""
        raise NotImplementedError

    def data_config(self, recipe: Recipe, model: nn.Module) -> dict[str, Any]:
        """The model's data config (input size, mean, std, ...) as trained and exported."""
        raise NotImplementedError

    def set_transforms(self, recipe: Recipe, data_config: dict[str, Any], train_ds, eval_ds) -> None:
        """Give the data sets the transforms of `data_config` (tasks whose data sets make their own: nothing)."""

    def loss(self, recipe: Recipe, num_classes: int) -> tuple[Callable | None, nn.Module]:
        """(batch mixing function or None, training loss)."""
        raise NotImplementedError

    def eval_batch_size(self, recipe: Recipe) -> int:
        return recipe.data.eval_batch_size

    def evaluate(self, model: nn.Module, loader, device: torch.device, recipe: Recipe, *, env,
                 collective_forward: bool) -> dict[str, float]:
        """Held-out metrics of `model` over `loader` (this process's part; summed over processes by `env`)."""
        raise NotImplementedError

    def baseline(self, recipe: Recipe, loader, device: torch.device, env) -> str | None:
        """A log line scoring a reference method on the held-out data before training (None: no reference)."""
        return None

    def describe(self, recipe: Recipe, train_ds, eval_ds) -> str:
        """The data of the run in words (the run's first log line)."""
        raise NotImplementedError

    def metric_line(self, metrics: dict[str, float]) -> str:
        """The held-out metric in words (progress lines)."""
        raise NotImplementedError

    def export_extra(self, recipe: Recipe) -> dict[str, Any]:
        """What an export's config.json records about the task besides its name."""
        return {}

    def summary(self, recipe: Recipe, metrics: dict[str, float], weights: str, seconds: float) -> str:
        """train.py's closing line: the held-out result."""
        raise NotImplementedError

    def eval_hint(self, recipe: Recipe) -> str:
        """Arguments ``eval.py --checkpoint EXPORT`` needs to score this run's export again."""
        return ""
