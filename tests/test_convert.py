"""`python -m zoo.convert`: an official checkpoint becomes an export folder that timm loads."""
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.davit import checkpoint_filter_fn as timm_checkpoint_filter_fn

import zoo  # noqa: F401
from tests.models.test_davit import _official_tiny_state_dict
from zoo.convert import convert, load_state_dict_file
from zoo.engine.export import load_export


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict]:
    sd = _official_tiny_state_dict(seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "davit_tiny_official.pth.tar"
    torch.save({"state_dict": sd, "epoch": 300}, path)
    return path, sd


def test_official_checkpoint_converts_to_timm_loadable_export(official, tmp_path):
    path, sd = official
    out = convert("zoo_davit_tiny", path, tmp_path / "export")
    model = load_export(out).eval()
    timm_model = timm.create_model("davit_tiny").eval()
    timm_model.load_state_dict(timm_checkpoint_filter_fn(sd, timm_model))
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        diff = (model(x) - timm_model(x)).abs().max().item()
    assert diff <= 1e-5, diff


def test_safetensors_input(official, tmp_path):
    _, sd = official
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    assert set(load_state_dict_file(st)) == set(sd)
    assert (convert("zoo_davit_tiny", st, tmp_path / "export") / "model.safetensors").is_file()


class _Payload:  # any class outside the allow-list (tensors, containers, known configs) stands for an untrusted pickle
    pass


def test_refuses_to_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "obj": _Payload()}, f)
    with pytest.raises(ValueError, match="evil.pth.*cannot be read safely"):
        load_state_dict_file(path)
    torch.save({"state_dict": {}, "obj": _Payload()}, path)  # the same as a torch.save file: refused by name
    with pytest.raises(ValueError, match=r"evil.pth.*refused: it pickles tests.test_convert._Payload"):
        load_state_dict_file(path)


def test_wrong_model_and_mismatched_keys_are_named(official, tmp_path):
    path, _ = official
    with pytest.raises(ValueError, match="'davit_tiny' is not a zoo model"):
        convert("davit_tiny", path, tmp_path / "a")
    with pytest.raises(ValueError, match="does not fit zoo_davit_small: missing keys"):
        convert("zoo_davit_small", path, tmp_path / "b")


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "zoo.convert", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--checkpoint" in r.stdout
