"""`pretrained=True` through timm for every family, without the internet: a loopback HTTP server (127.0.0.1, started
and stopped here) serves official-layout checkpoints (the random official-layout state dicts the family tests build
from their key fixtures) in the container each official trainer writes; the model timm builds must hold exactly what
the family's converter makes of the file. Broken downloads (dead host, 404, HTML page, truncated body, sha256
mismatch) must each raise one clear error and leave timm's cache without the file or a partial download."""
from __future__ import annotations

import http.server
import importlib
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the models)

# the family tests import their sibling tests/models/param_counts.py as a top-level module (pytest puts that folder
# on sys.path when it collects it; importing them from here needs it too)
sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from tests.official_containers import save_official  # noqa: E402
from zoo.convert import checkpoint_filter_for, load_checkpoint_file  # noqa: E402
from zoo.weights import WeightsError, weights_notes  # noqa: E402

# Each family's test file (tests/models/test_<family>.py for zoo/models/<family>.py) names the model it proves
# pretrained=True on (`LOOPBACK_MODEL`) and builds that model's official file (`official_checkpoint(seed)`).
_FAMILY_FILES = sorted(p.stem for p in Path(zoo.models.__file__).parent.glob("*.py") if p.stem != "__init__")
_FAMILY_TESTS = {f: importlib.import_module(f"tests.models.test_{f}") for f in _FAMILY_FILES
                 if (Path(__file__).parent / "models" / f"test_{f}.py").is_file()}
FAMILIES = {m.LOOPBACK_MODEL: m for m in _FAMILY_TESTS.values() if hasattr(m, "LOOPBACK_MODEL")}


class _Server:
    """127.0.0.1 HTTP server: `files` maps a path to bytes; '/page/...' answers an HTML page, '/gone/...' 404,
    '/cut/NAME' announces NAME's full length and sends half of it."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if path.startswith("/page/"):
                    body = b"<!DOCTYPE html><html><body>Preview of a file: Download</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path.startswith("/cut/") and path[4:] in files:
                    body = files[path[4:]]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif path in files:
                    body = files[path]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404, "Not Found")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def server():
    with _Server() as s:
        yield s


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """timm's download cache ($TORCH_HOME/hub/checkpoints), empty, private to the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    from timm.models._hub import get_cache_dir

    return Path(get_cache_dir())


def _serve(server, name: str, tmp_path: Path) -> tuple[str, Path, Any]:
    """Serve `name`'s official file; returns its URL, the local copy and the object the file holds."""
    path = tmp_path / f"{name}_official.pth"
    official = FAMILIES[name].official_checkpoint(seed=5)[0]
    save_official(official, path)
    server.files[f"/{name}/{path.name}"] = path.read_bytes()
    return server.url(f"/{name}/{path.name}"), path, official


def _kwargs(name: str) -> dict:
    return FAMILIES[name].official_checkpoint(seed=5)[1]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pretrained_loads_the_official_container_over_http(name, server, cache, tmp_path, one_thread):
    url, path, official = _serve(server, name, tmp_path)
    kwargs = _kwargs(name)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=url), **kwargs)
    # the converter's result from the same file (the filter reads only shapes from the model)
    expected = checkpoint_filter_for(name)(load_checkpoint_file(path), model)
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got), [k for k in got if not torch.equal(got[k], expected[k])]
    # the download is cached under its URL's file name; the model's cfg does not keep the tensors
    assert [p.name for p in cache.iterdir()] == [path.name]
    assert "state_dict" not in model.pretrained_cfg and model.pretrained_cfg["url"] == url

    # fine-tuning: timm's convention, a new head (re-initialised) and every other weight from the file; HAT's
    # counterpart is another scale: the x2 upsampler is re-initialised for x3, the body loads
    if name.startswith("hat_"):
        tuned = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=url), **kwargs, upscale=3)
        head = ("upsample.",)
    else:
        tuned = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=url), num_classes=7, **kwargs)
        assert tuned.get_classifier().out_features == 7
        head = tuple(f"{c}." for c in (tuned.pretrained_cfg["classifier"],))
    tuned_sd = tuned.state_dict()
    differ = {k for k in tuned_sd if k not in got or tuned_sd[k].shape != got[k].shape
              or not torch.equal(tuned_sd[k], got[k])}
    assert differ and all(k.startswith(head) for k in differ), sorted(differ)[:5]


def test_every_family_is_covered():
    families = {timm.models.model_entrypoint(n).__module__ for n in zoo.list_models()}
    assert families == {f"zoo.models.{f}" for f in _FAMILY_FILES}
    missing = [f for f in _FAMILY_FILES if not hasattr(_FAMILY_TESTS.get(f), "LOOPBACK_MODEL")]
    assert not missing, (f"tests/models/test_<family>.py of {missing} must define LOOPBACK_MODEL (the smallest model "
                         f"with an official key layout) and official_checkpoint(seed) (its official file's object, "
                         f"the create_model kwargs): pretrained=True must be proven for every family")
    for f, module in _FAMILY_TESTS.items():
        assert timm.models.model_entrypoint(module.LOOPBACK_MODEL).__module__ == f"zoo.models.{f}", f


def _no_downloads_left(cache: Path) -> None:
    assert list(cache.iterdir()) == [], sorted(p.name for p in cache.iterdir())


def test_broken_downloads_raise_one_clear_error_and_leave_the_cache_clean(server, cache, tmp_path):
    name = "emo2_1m"
    url, path, _ = _serve(server, name, tmp_path)
    good = url.split("127.0.0.1:", 1)[1].split("/", 1)[1]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/{good}"
    cases = {
        dead: r"cannot download .*127\.0\.0\.1.*emo2_1m.*refused",
        server.url("/gone/EMOv2_1M_224.pth"): r"HTTP 404 Not Found; the file has moved",
        server.url("/page/EMOv2_1M_224.pth"): r"returned an HTML page .*direct download link",
        server.url(f"/cut/{good}"): r"(truncated: \d+ of \d+ bytes|broke off after \d+ bytes)",
    }
    for bad, needle in cases.items():
        with pytest.raises(WeightsError, match=needle) as info:
            timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=bad))
        assert bad in str(info.value)
        _no_downloads_left(cache)

    # an HTML page served as octet-stream (no Content-Type hint): caught by the file check
    server.files["/disguised/EMOv2_1M_224.pth"] = b"<html><head><title>Sign in</title></head></html>"
    with pytest.raises(WeightsError, match=r"unusable: .*HTML page"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=server.url(
            "/disguised/EMOv2_1M_224.pth")))
    _no_downloads_left(cache)

    # sha256: a mismatch names the file and both hashes; the right hash loads
    import hashlib

    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    notes = timm.models.get_pretrained_cfg(f"{name}.in1k").notes

    def with_sha(sha):
        return dict(url=url, notes=(*notes, f"sha256: {sha}"))

    with pytest.raises(WeightsError, match=rf"{path.name}.*sha256 {actual}, expected {wrong}"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=with_sha(wrong))
    _no_downloads_left(cache)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=with_sha(actual))
    assert weights_notes(model.pretrained_cfg)["sha256"] == actual
    assert [p.name for p in cache.iterdir()] == [path.name]
    # a cached file that no longer matches is removed, with both hashes named
    (cache / path.name).write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(WeightsError, match=r"cached file .* has sha256 [0-9a-f]{64}, expected"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=with_sha(actual))
    _no_downloads_left(cache)


def test_hosts_without_a_download(cache, monkeypatch):
    import sys

    # BiFormer: dead official links, the message names the mirror
    with pytest.raises(WeightsError, match=r"biformer_tiny.in1k.*rayleizhu/BiFormer issue #53.*1drv\.ms"):
        timm.create_model("biformer_tiny", pretrained=True)
    # Google Drive without gdown: says which client and how to install it; nothing downloaded
    monkeypatch.setitem(sys.modules, "gdown", None)
    with pytest.raises(WeightsError, match=r"hat_s_x2.df2k is on Google Drive .*HAT-S_SRx2.pth.*pip install gdown"):
        timm.create_model("hat_s_x2", pretrained=True, **_kwargs("hat_s_x2"))
    with pytest.raises(WeightsError, match=r"zoo_davit_tiny.msft_in1k_gdrive is on Google Drive"):
        timm.create_model("zoo_davit_tiny.msft_in1k_gdrive", pretrained=True)
    _no_downloads_left(cache)
    # a tag's model args must fit the file
    with pytest.raises(WeightsError, match=r"litv2_small.alpha_0_5 was trained with alpha=0.5"):
        timm.create_model("litv2_small.alpha_0_5", pretrained=True, alpha=0.9)


def test_gdrive_folder_file_is_fetched_with_gdown(server, cache, tmp_path, monkeypatch):
    """With a Drive client, the folder's listing gives the file's id, which is downloaded and checked like any
    other file (a stand-in gdown module here: the real one needs Google Drive)."""
    import sys
    import types
    from collections import namedtuple

    name = "hat_s_x2"
    _, path, official = _serve(server, name, tmp_path)
    entry = namedtuple("GoogleDriveFileToDownload", "id path local_path")
    calls = []

    def download_folder(url, skip_download, quiet):
        calls.append(("folder", url))
        return [entry("id-other", "HAT/HAT_SRx2.pth", None), entry("id-file", "HAT/HAT-S_SRx2.pth", None)]

    def download(id=None, url=None, output=None, quiet=True, fuzzy=False):
        calls.append(("file", id))
        Path(output).write_bytes(path.read_bytes())
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download_folder=download_folder,
                                                                     download=download))
    model = timm.create_model(name, pretrained=True, **_kwargs(name))
    assert calls == [("folder", "https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0"),
                     ("file", "id-file")]
    assert torch.equal(model.conv_first.weight, official["params_ema"]["conv_first.weight"])
    assert [p.name for p in cache.iterdir()] == ["HAT-S_SRx2.pth"]


def test_weights_cli_lists_and_exports(server, cache, tmp_path, capsys):
    from zoo.engine.export import load_export
    from zoo.weights import main

    assert main(["list", "litv2_small*"]) == 0
    listed = capsys.readouterr().out
    assert "litv2_small.alpha_0_5\tdownload\t{'model': state_dict" in listed
    assert "https://github.com/ziplab/LITv2/releases/download/v1.1/alpha_0.5.pth" in listed
    assert main(["list", "biformer_tiny*"]) == 0 and "unavailable" in capsys.readouterr().out
    assert main(["list", "hat_s_x2*"]) == 0 and "hat_s_x2.df2k\tgdown" in capsys.readouterr().out
    assert main(["list", "no_such_model*"]) == 1

    name = "emo2_1m"
    url, path, _ = _serve(server, name, tmp_path)
    out = tmp_path / "export"
    assert main(["download", f"{name}.in1k_kd", "--output", str(out), "--url", url]) == 0
    exported = load_export(out)
    direct = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=url))
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in exported.state_dict().items())
    config = (out / "config.json").read_text()
    assert '"tag": "in1k_kd"' in config and path.name in config
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() in config
    with pytest.raises(WeightsError, match="'nat_nope' is not a zoo model"):
        main(["download", "nat_nope", "--output", str(tmp_path / "x")])
