"""Bad input into the engine and the command lines: files, flags, a diverging run, fine-tuning into another head.

Every case asserts the exact error type (or exit status 2 and one line on stderr for the command lines) and that
the message names the offending file or value. Models and ops have their own bad-input modules
(tests/models/test_model_bad_inputs.py, tests/ops/test_op_bad_inputs.py).
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle

import numpy as np
import pytest
import timm
import torch
from engine_helpers import TINY_MODEL, run_script, tiny_recipe, tiny_recipe_dict
from PIL import Image

import zoo  # noqa: F401  (registers the zoo models)
from zoo.data.folder import image_folder
from zoo.data.images import open_rgb
from zoo.engine.checkpoint import CheckpointError, load_checkpoint
from zoo.engine.cli import eval_main, train_main
from zoo.engine.export import export_model, load_export
from zoo.engine.setup import load_init_weights
from zoo.errors import DivergedError, FileError, InputError, WriteError, run_cli
from zoo.files import atomic_write

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(num_classes=10, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(TINY_MODEL["name"], num_classes=num_classes, **TINY_MODEL["kwargs"], **kwargs)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export_model(_tiny(), out, model_args=TINY_MODEL["kwargs"], label_names=[str(i) for i in range(10)])


def _one_error_line(capsys, prog):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ----------------------------------------------------------------------------------------------------------------
# Images


def _png16(path, values):
    Image.fromarray(values.astype(np.uint16)).save(path)  # PIL writes mode I;16 as a 16-bit greyscale PNG
    return path


def test_sixteen_bit_png_reads_like_its_eight_bit_copy(tmp_path):
    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = _png16(tmp_path / "g16.png", eight.astype(np.uint16) * 257)  # the exact 16-bit expansion of `eight`
    got = np.asarray(open_rgb(path))
    assert got.shape == (16, 16, 3) and np.array_equal(got[..., 0], eight)  # PIL's convert('RGB') gives 255s


def test_float_image_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(path)
    with pytest.raises(FileError, match=r"depth.tiff' holds floating-point pixels \(mode F\)"):
        open_rgb(path)


def _folder(tmp_path, corrupt: bool):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(tmp_path / "train" / cls / f"{i}.jpg")
    bad = tmp_path / "train" / "b" / "1.jpg"
    if corrupt:
        bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    return bad


def test_corrupt_image_is_named(tmp_path):
    bad = _folder(tmp_path, corrupt=True)
    ds = image_folder(tmp_path, "train")
    with pytest.raises(FileError, match=rf"{bad}' cannot be read .*set data.skip_corrupt: true"):
        [ds[i] for i in range(len(ds))]


def test_corrupt_image_is_skipped_and_counted_with_the_switch(tmp_path, capsys):
    bad = _folder(tmp_path, corrupt=True)
    ds = image_folder(tmp_path, "train", skip_corrupt=True)
    samples = [ds[i] for i in range(len(ds))]
    assert len(samples) == 4 and ds.skipped == {str(bad)}
    assert f"skipped unreadable image 1: image {str(bad)!r}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, exports, writes


def test_truncated_export_is_named(tmp_path, export_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in export_dir.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    with pytest.raises(FileError, match=r"model.safetensors' cannot be read .* truncated or corrupt"):
        load_export(broken)


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    flag = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"format": "x", "model": Payload()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"evil.pth' holds a Python object \(posix.system\) that is not"):
        load_checkpoint(path)
    assert not flag.exists()


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos")])
def test_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, failure):
    path = tmp_path / "checkpoint-last.pth"
    atomic_write(path, lambda f: f.write(b"old"))

    def write(f):
        f.write(b"partial")
        raise failure

    with pytest.raises(WriteError, match=rf"cannot write '{path}' .*; the previous file is unchanged"):
        atomic_write(path, write)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["checkpoint-last.pth"]


# ----------------------------------------------------------------------------------------------------------------
# Command lines: one line, exit 2, --debug for the traceback


def test_train_misspelled_model_is_one_line(capsys):
    assert train_main(["--set", "model.name=zoo_davit_tinny", "--set", "train.epochs=1"]) == 2
    assert "model.name 'zoo_davit_tinny' is not a registered timm or zoo model" in _one_error_line(capsys, "train.py")


def test_train_bad_device_is_one_line(capsys):
    assert train_main(["--set", "device=gpu"]) == 2
    assert "recipe key 'device'" in (line := _one_error_line(capsys, "train.py"))
    assert "must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in line


def test_eval_missing_checkpoint_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert eval_main(["--checkpoint", str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys, "eval.py")
    with pytest.raises(CheckpointError, match="does not exist"):
        eval_main(["--checkpoint", str(missing), "--debug"])


def test_internal_errors_keep_their_traceback():
    def bug(argv):
        raise KeyError("a bug, not the user's mistake")

    with pytest.raises(KeyError):
        run_cli("x", bug, [])


def test_script_exit_status_and_stderr(tmp_path):
    proc = run_script("eval.py", "--checkpoint", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "missing" in proc.stderr


# ----------------------------------------------------------------------------------------------------------------
# A diverging run stops with the engine's message; the last good checkpoint stays


def test_diverging_run_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    from zoo.engine.train import train

    recipe = dict(data={"train_subset": 64}, train={"epochs": 1, "threads": 1})
    train(tiny_recipe(**recipe), tmp_path, progress=False, log=None)
    last = tmp_path / "checkpoint-last.pth"
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    diverging = tiny_recipe_dict(**recipe, optim={"lr": 1e30})
    diverging["train"]["epochs"] = 2
    with pytest.raises(DivergedError, match=r"training loss is (nan|inf) at epoch 2.* lower optim.lr \(now 1e\+30\)"):
        train(tiny_recipe(**{k: v for k, v in diverging.items() if k in ("optim", "train", "data")}), tmp_path,
              resume=last, progress=False, log=None)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    load_checkpoint(last)


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning from weights with another head / input channels


def test_init_weights_into_another_number_of_classes(export_dir):
    model = _tiny(num_classes=2)
    head_before = model.head.fc.weight.clone()
    loaded = load_init_weights(model, export_dir)
    assert loaded.reinitialised == {"head.fc": "checkpoint 10 classes, model 2"}
    assert "re-initialised head.fc (checkpoint 10 classes, model 2)" in loaded.describe()
    assert torch.equal(model.head.fc.weight, head_before) and not loaded.missing and not loaded.unexpected
    source = load_export(export_dir).state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("head.fc."):
            assert torch.equal(v, source[k]), k


def test_init_weights_into_another_number_of_input_channels(export_dir):
    model = _tiny(in_chans=1)
    loaded = load_init_weights(model, export_dir)
    assert list(loaded.reinitialised) == ["stem.conv (adapted)"]
    source = load_export(export_dir).state_dict()["stem.conv.weight"]
    assert torch.allclose(model.stem.conv.weight, source.sum(1, keepdim=True))  # timm's adapt_input_conv


def test_init_weights_that_do_not_fit_name_the_weights(export_dir):
    model = timm.create_model(TINY_MODEL["name"], num_classes=10,
                              **{**TINY_MODEL["kwargs"], "embed_dims": [16, 32, 64, 96]})
    with pytest.raises(CheckpointError, match=r"does not fit the model: 36 weights differ in shape \(checkpoint vs "
                                              r"model\): head.norm.bias \(128,\) vs \(96,\);"):
        load_init_weights(model, export_dir)


def test_fine_tuning_recipe_runs_from_an_export_with_ten_classes_into_two(tmp_path, export_dir, capsys):
    from zoo.engine.train import train

    recipe = tiny_recipe(model={**TINY_MODEL, "init_checkpoint": str(export_dir)},
                         data={"digits_labels": "parity", "train_subset": 64}, train={"epochs": 1, "threads": 1})
    result = train(recipe, tmp_path, progress=False)
    assert set(result.metrics) >= {"top1"}
    assert "re-initialised head.fc (checkpoint 10 classes, model 2)" in capsys.readouterr().out


def test_unknown_digits_labels_are_named():
    from zoo.data import create_dataset

    with pytest.raises(InputError, match=r"digits labels 'colour' is not one of 'digit', 'parity'"):
        create_dataset("digits", "train", labels="colour")


def test_convert_misspelled_model_is_one_line(export_dir):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "zoo.convert", "--model", "zoo_davit_tinny", "--checkpoint",
                           str(export_dir / "model.safetensors"), "--output", str(export_dir.parent / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--model 'zoo_davit_tinny' is not a zoo model; did you mean zoo_davit_tiny" in proc.stderr


@pytest.mark.parametrize("name", ["agent_pvt_t", "agent_cswin_t"])
def test_init_weights_into_another_input_size_resizes_the_position_tables(tmp_path, name):
    # an export at 224 into the same architecture at 256 and another number of classes: the agent / position
    # tables are resized by the family's checkpoint_filter_fn, the head re-initialised, everything else strict
    torch.manual_seed(0)
    export_model(timm.create_model(name, num_classes=10), tmp_path)
    model = timm.create_model(name, num_classes=3, img_size=256)
    loaded = load_init_weights(model, tmp_path)
    assert list(loaded.reinitialised) in (["head"], ["head.fc"]) and not loaded.missing and not loaded.unexpected
