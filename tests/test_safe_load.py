"""zoo.convert.load_checkpoint_file: official containers that pickle training configs load without running anything
from the file; every other global is refused by name; damaged files are named with the reason."""
from __future__ import annotations

import argparse
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tests.official_containers import CONTAINERS, save_official
from zoo.convert import load_checkpoint_file
from zoo.errors import FileError
from zoo.safe_unpickle import PickledConfig


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(w=torch.randn(3, 4, generator=g), b=torch.randn(3, generator=g))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_official_containers_load_with_inert_configs(container, legacy, tmp_path):
    sd = _weights()
    path = tmp_path / "ckpt.pth"
    save_official(CONTAINERS[container](sd), path, legacy=legacy)
    out = load_checkpoint_file(path)
    inner = next((out[k] for k in ("model", "state_dict", "params_ema", "net") if k in out), out)
    assert inner.keys() == sd.keys() and all(torch.equal(inner[k], sd[k]) for k in sd)
    if "config" in out:  # the yacs node: a plain OrderedDict of its values, nested nodes too
        assert type(out["config"]) is OrderedDict and out["config"]["MODEL"]["DROP_PATH_RATE"] == 0.2
        assert out["config"]["SEEDS"] == [0, 1]
    if "args" in out:  # the Namespace: an inert stand-in with its attributes
        assert type(out["args"]) is PickledConfig and vars(out["args"])["model"] in ("ravlt_t", "davit_tiny")


def test_pathlib_values_become_strings(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": _weights(), "args": argparse.Namespace(output_dir=Path("runs") / "a")}, path)
    assert load_checkpoint_file(path)["args"].output_dir == str(Path("runs") / "a")


class _Payload:
    """Unpickling this would create `marker` (what any malicious pickle could do instead)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class _DisguisedPayload:
    """A payload that calls the Namespace *name* with arguments, hoping the real class (or anything) runs."""

    def __reduce__(self):
        return argparse.Namespace, (), {"__class__": "x"}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_file_is_refused_by_name_and_its_payload_never_runs(legacy, tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _weights(), "config": _Payload(str(marker))}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(FileError, match=rf"{path.name}.*refused: it pickles .*mkdir"):
        load_checkpoint_file(path)
    assert not marker.exists()
    # a plain pickle.dump of the same object (not a torch.save file)
    plain = tmp_path / "evil_plain.pth"
    with open(plain, "wb") as f:
        pickle.dump({"state_dict": {}, "obj": _Payload(str(marker))}, f)
    with pytest.raises(FileError, match="evil_plain.pth"):
        load_checkpoint_file(plain)
    assert not marker.exists()
    # the real pickle would have run it: the marker is the payload's effect
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.is_dir()


def test_a_namespace_name_cannot_smuggle_state(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": _weights(), "args": _DisguisedPayload()}, path)
    out = load_checkpoint_file(path)  # the stand-in keeps the attribute as data; the class stays the stand-in
    assert type(out["args"]) is PickledConfig


def test_damaged_and_wrong_files_are_named_with_the_reason(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": _weights()}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pth": (data[: len(data) // 2], "truncated or corrupt"),
        "page.pth": (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
        "empty.pth": (b"", "is empty"),
        "lfs.pth": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "Git LFS pointer"),
        "text.pth": (b"hello, this is not a checkpoint", "not a checkpoint"),
        "broken.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1", "corrupt safetensors"),
    }
    for name, (content, needle) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(FileError, match=needle) as info:
            load_checkpoint_file(p)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_file(tmp_path / "missing.pth")
    lst = tmp_path / "list.pth"
    torch.save([torch.ones(1)], lst)
    with pytest.raises(FileError, match="holds a list"):
        load_checkpoint_file(lst)


def test_no_code_loads_with_weights_only_false():
    """No call anywhere in the project passes weights_only=False (prose that mentions it is not code)."""
    import io
    import tokenize

    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("zoo", "ops", "scripts", "tests", "benchmarks", "configs") for p in (root / d).rglob("*.py")]
    files += [root / "train.py", root / "eval.py"]
    offenders = []
    for path in files:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
        for a, b, c in zip(tokens, tokens[1:], tokens[2:]):
            if (a.string, b.string, c.string) == ("weights_only", "=", "False"):
                offenders.append(f"{path.relative_to(root)}:{a.start[0]}")
    assert len(files) > 50 and offenders == []
    # the scan finds such a call
    probe = "torch.load(f, weights_only=False)  # weights_only=False in a comment\n"
    toks = [t.string for t in tokenize.generate_tokens(io.StringIO(probe).readline)]
    assert "weights_only" in toks and toks[toks.index("weights_only") + 2] == "False"
