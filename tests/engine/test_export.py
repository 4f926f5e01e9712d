"""Export: model.safetensors + config.json that timm's `local-dir:` loader rebuilds into the same model."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from engine_helpers import TINY_MODEL, tiny_recipe

from zoo.engine.export import export_model, load_export
from zoo.engine.setup import create_model, resolve_data_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_reloads_through_timm_local_dir_with_identical_logits(tmp_path):
    recipe = tiny_recipe()
    torch.manual_seed(0)
    model = create_model(recipe, num_classes=10).eval()
    labels = [f"digit {i}" for i in range(10)]
    export_model(model, tmp_path / "export", model_args=TINY_MODEL["kwargs"], label_names=labels,
                 data_config={k: v for k, v in resolve_data_config(recipe, model).items() if k != "crop_mode"})

    import zoo  # noqa: F401  (registers zoo_davit_tiny, as a user would)
    loaded = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True).eval()
    assert type(loaded) is type(model)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.pretrained_cfg["label_names"] == labels
    assert tuple(loaded.pretrained_cfg["input_size"]) == (3, 32, 32)
    assert tuple(loaded.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5)


def test_config_json_is_timm_layout_with_the_architecture(trained_run):
    cfg = json.loads((trained_run.export_dir / "config.json").read_text())
    assert cfg["architecture"] == "zoo_davit_tiny"
    assert cfg["num_classes"] == 10 and cfg["num_features"] == 128
    for key, value in TINY_MODEL["kwargs"].items():
        assert cfg["model_args"][key] in (value, [value, value])  # img_size may be recorded as (H, W)
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 32, 32] and pcfg["mean"] == [0.5] * 3 and pcfg["std"] == [0.5] * 3
    assert pcfg["interpolation"] == "bicubic" and pcfg["crop_pct"] == 1.0
    assert cfg["label_names"] == [str(i) for i in range(10)]
    assert cfg["attnzoo"]["weights"] == "ema"  # the recipe enables EMA: the EMA weights are exported
    assert cfg["attnzoo"]["held_out"]["top1"] == pytest.approx(trained_run.metrics["top1"])
    assert cfg["attnzoo"]["recipe"]["model"]["name"] == "zoo_davit_tiny"


def test_exported_weights_are_the_ema_weights(trained_run):
    from zoo.engine.checkpoint import load_checkpoint

    loaded = load_export(trained_run.export_dir)
    ema = load_checkpoint(trained_run.checkpoint)["ema"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ema["module." + key]), key


def test_not_an_export_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an export folder"):
        load_export(tmp_path)
