"""Scores of saved models: top-1 / top-5 / loss of a classifier (:func:`evaluate_checkpoint`), PSNR / SSIM of a
super-resolution model (:func:`evaluate_sr_checkpoint`), with the tasks' metrics (:func:`zoo.engine.tasks.cls.evaluate`,
:func:`zoo.engine.sr.evaluate_sr`).

:func:`evaluate_checkpoint` is what ``eval.py`` calls: it takes an export folder (``model.safetensors`` +
``config.json``, loaded through ``timm.create_model('local-dir:...')``) or a training checkpoint (model rebuilt
from its recipe through ``timm.create_model``), builds the evaluation transform from the model's data config and
scores it on the digits held-out split (with the split parameters the model was trained with) or an ImageFolder
tree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.data import create_dataset
from zoo.data.sr import SRPairs, skimage_photos
from zoo.engine.checkpoint import CheckpointError, load_checkpoint
from zoo.engine.config import recipe_from_dict
from zoo.engine.export import WEIGHTS_NAME, load_export, read_export_config
from zoo.engine.setup import create_model, ema_weights, load_init_weights, resolve_device
from zoo.engine.sr import Bicubic, evaluate_sr
from zoo.engine.tasks import get_task
from zoo.engine.tasks.cls import evaluate
from zoo.errors import InputError

__all__ = ["evaluate_checkpoint", "evaluate_sr_checkpoint", "load_model", "model_scale", "model_task", "saved_task"]


def load_model(path: str | Path, *, weights: str = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """A model in eval mode from an export folder or a training checkpoint, and what is known about how it was
    trained: ``{'kind', 'weights', 'recipe' (dict or None), 'label_names', 'data_config'}``.

    `weights` ('auto', 'model', 'ema') picks the training checkpoint's EMA or raw weights ('auto': EMA when
    the checkpoint has it); an export holds one set of weights and records which in its config.
    """
    import timm.data

    if weights not in ("auto", "model", "ema"):
        raise InputError(f"weights {weights!r} is not one of 'auto', 'model', 'ema'")
    path = Path(path)
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is a folder without {WEIGHTS_NAME}; expected an export folder "
                f"(model.safetensors + config.json) or a training checkpoint file")
        config = read_export_config(path)
        info = config.get("attnzoo", {}) if isinstance(config.get("attnzoo"), dict) else {}
        exported = info.get("weights", "model")
        if weights not in ("auto", exported):
            raise InputError(f"export {str(path)!r} holds the {exported!r} weights, not {weights!r}")
        model = load_export(path)
        label_names = model.pretrained_cfg.get("label_names")
        return model.eval(), {
            "kind": "export", "weights": exported, "recipe": info.get("recipe"),
            "label_names": list(label_names) if label_names else None,
            "data_config": timm.data.resolve_data_config(model=model),
            "task": info.get("task") or model_task(model),
        }

    state = load_checkpoint(path)
    recipe = recipe_from_dict(state["recipe"], f"the recipe stored in {str(path)!r}")
    task = get_task(recipe.task)
    label_names = state.get("label_names")
    num_classes = state.get("num_classes") or len(label_names or ())
    if not num_classes and task.classes:
        raise CheckpointError(f"checkpoint {str(path)!r} does not record its number of classes")
    # the checkpoint holds every weight: never fetch the recipe's pretrained starting point again
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, pretrained=False))
    model = create_model(recipe, num_classes)
    has_ema = state.get("ema") is not None
    if weights == "ema" and not has_ema:
        raise InputError(f"checkpoint {str(path)!r} has no EMA weights (ema.enabled was false)")
    use = "ema" if weights == "ema" or (weights == "auto" and has_ema) else "model"
    sd = ema_weights(state["ema"]) if use == "ema" else state["model"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model its recipe builds: {e}") from None
    return model.eval(), {
        "kind": "checkpoint", "weights": use, "recipe": state["recipe"], "label_names": label_names,
        "data_config": task.data_config(recipe, model), "task": recipe.task,
    }


def model_task(model: nn.Module) -> str:
    """'sr' for a super-resolution model (its pretrained_cfg notes say ``task: super-resolution``), else 'cls'."""
    return _task_from_notes((getattr(model, "pretrained_cfg", None) or {}).get("notes"))


def _task_from_notes(notes) -> str:
    return "sr" if "task: super-resolution" in (notes or ()) else "cls"


def saved_task(path: str | Path) -> str:
    """The task of an export (its config.json) or a training checkpoint (its recipe): 'cls' or 'sr'."""
    if Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            return "cls"  # not an export: the classification path reports what is missing
        cfg = read_export_config(path)
        info = cfg.get("attnzoo") if isinstance(cfg.get("attnzoo"), dict) else {}
        return info.get("task") or _task_from_notes((cfg.get("pretrained_cfg") or {}).get("notes"))
    return (load_checkpoint(path).get("recipe") or {}).get("task", "cls")


def model_scale(model: nn.Module) -> int | None:
    """The upscaling factor of an SR model: its ``upscale`` attribute, else ``scale: N`` in pretrained_cfg notes."""
    if isinstance(getattr(model, "upscale", None), int):
        return model.upscale
    for note in (getattr(model, "pretrained_cfg", None) or {}).get("notes") or ():
        if isinstance(note, str) and note.startswith("scale: "):
            return int(note.split(":", 1)[1])
    return None


def evaluate_sr_checkpoint(
        path: str | Path,
        *,
        data_dir: str | Path | None = None,
        lr_dir: str | Path | None = None,
        filename_tmpl: str = "{}",
        scale: int | None = None,
        tile: int | None = None,
        tile_overlap: int = 32,
        model_name: str | None = None,
        device: str = "auto",
        weights: str = "auto",
        bicubic: bool = False,
        progress: bool = False,
) -> dict[str, Any]:
    """Mean PSNR / SSIM (Y channel, border crop = scale, BasicSR's metrics) of a saved SR model.

    `path`: an export folder or training checkpoint of this engine, or (with `model_name`, a registered model) any
    weights file the model's ``checkpoint_filter_fn`` reads (e.g. BasicSR's ``params_ema``). Data: the HR images in
    `data_dir` with their LR images in `lr_dir` (names via `filename_tmpl`) or, without `lr_dir`, LR images made by
    MATLAB-style bicubic downscaling (HR cropped to a multiple of the scale, LR rounded to 8 bits); without
    `data_dir`, the held-out scikit-image photographs of the model's recipe when it trained on them. Any image size
    (the model pads to its window and the output is cropped back); `tile` runs the LR input in tiles of that many
    pixels with `tile_overlap` pixels of context (large images). `bicubic`: also score bicubic upscaling.
    """
    if model_name is not None:
        import timm

        import zoo  # noqa: F401  (registers the zoo models with timm)
        model = timm.create_model(model_name)
        load_init_weights(model, path, strict=True)
        info = {"kind": f"weights file ({model_name})", "weights": "file", "recipe": None, "task": model_task(model)}
        model.eval()
    else:
        model, info = load_model(path, weights=weights)
    if info.get("task") != "sr":
        raise InputError(f"{str(path)!r} is not a super-resolution model (task {info.get('task')!r})")
    own = model_scale(model)
    if scale is None:
        scale = own
        if scale is None:
            raise InputError(f"the scale of {str(path)!r} is unknown; pass --scale")
    elif own is not None and own != scale:
        raise InputError(f"--scale {scale} does not match the model's x{own} upscaling")
    if data_dir is not None:
        dataset = SRPairs(scale, hr_dir=data_dir, lr_dir=lr_dir, filename_tmpl=filename_tmpl)
        data_name = (f"paired folders {str(data_dir)!r} / {str(lr_dir)!r}" if lr_dir is not None
                     else f"HR folder {str(data_dir)!r}, bicubic LR")
    else:
        if lr_dir is not None:
            raise InputError("--lr-dir pairs with --data-dir (the HR folder)")
        recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
        if recipe.get("data", {}).get("name") != "sr_skimage":
            raise InputError(f"{str(path)!r} was not trained on the embedded scikit-image photographs; pass --data-dir")
        names = recipe.get("sr", {}).get("skimage_val") or []
        dataset = SRPairs(scale, images=skimage_photos(names), names=names)
        data_name = f"held-out scikit-image photographs ({', '.join(names)}), bicubic LR"
    dev = resolve_device(device)
    model.to(dev)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
    window = getattr(model, "window_size", 1) if tile else 1
    metrics = evaluate_sr(model, loader, dev, scale=scale, tile=tile, overlap=tile_overlap, window_size=window,
                          progress=progress)
    out = dict(metrics, scale=scale, data=data_name, kind=info["kind"], weights=info["weights"],
               tile=tile, tile_overlap=tile_overlap if tile else None)
    if bicubic:
        base = evaluate_sr(Bicubic(scale), loader, "cpu", scale=scale)
        out.update(bicubic_psnr=base["psnr"], bicubic_ssim=base["ssim"])
    return out


def evaluate_checkpoint(
        path: str | Path,
        *,
        data_dir: str | Path | None = None,
        split: str = "val",
        batch_size: int = 256,
        num_workers: int = 0,
        device: str = "auto",
        weights: str = "auto",
        progress: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 / loss of the saved model at `path` (export folder or training checkpoint).

    Data: the ImageFolder ``data_dir/split`` when `data_dir` is given (its class folders must be the model's
    labels, in order, when the model records label names), else the digits held-out split with the
    ``test_fraction`` / ``split_seed`` / ``img_size`` of the model's recipe (digits defaults when unknown).
    """
    import timm.data

    model, info = load_model(path, weights=weights)
    dev = resolve_device(device)
    model.to(dev)
    transform = timm.data.create_transform(**_eval_transform_args(info["data_config"]))
    if data_dir is not None:
        dataset = create_dataset("folder", "eval", root=str(data_dir), folder_split=split, transform=transform)
        data_name = f"image folder {str(Path(data_dir) / split)!r}"
        labels = info["label_names"]
        if labels and list(dataset.classes) != list(labels):
            raise InputError(
                f"the class folders of {data_name} ({', '.join(dataset.classes[:10])}"
                f"{', ...' if len(dataset.classes) > 10 else ''}) are not the model's labels "
                f"({', '.join(map(str, labels[:10]))}{', ...' if len(labels) > 10 else ''})")
    else:
        data = (info["recipe"] or {}).get("data", {}) if isinstance(info["recipe"], dict) else {}
        if data.get("name", "digits") != "digits":
            raise InputError(
                f"{str(path)!r} was trained on data set {data.get('name')!r}, not digits; pass --data-dir")
        dataset = create_dataset(
            "digits", "eval", transform=transform, test_fraction=data.get("test_fraction", 0.2),
            seed=data.get("split_seed", 0), img_size=data.get("img_size", info["data_config"]["input_size"][-1]),
            labels=data.get("digits_labels", "digit"))
        data_name = "digits held-out split"
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and len(dataset.classes) > num_classes:
        raise InputError(f"{data_name} has {len(dataset.classes)} classes, the model predicts {num_classes}")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    metrics = evaluate(model, loader, dev, progress=progress)
    return dict(metrics, data=data_name, kind=info["kind"], weights=info["weights"])


def _eval_transform_args(data_config: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return dict({k: data_config[k] for k in keys if data_config.get(k) is not None}, is_training=False)
