"""Official pretrained weights: where each tag's file is, how it is fetched, checked, cached and converted.

    python -m zoo.weights list [PATTERN]                 # every pretrained tag: host, container, sha256, status
    python -m zoo.weights download MODEL[.TAG] --output DIR [--url URL] [--file PATH]

Each family's ``default_cfgs`` gives a tag its official file with :func:`official_weights` (URL, the file's
container, its sha256 when known, the model args it needs) or says why there is none with :func:`unavailable`.
``timm.create_model(name, pretrained=True)`` then loads it through the family's ``_create_*``, which calls
:func:`create`: the file is downloaded into timm's cache (``$TORCH_HOME/hub/checkpoints``, what
``timm.models._hub.get_cache_dir()`` returns), read with :func:`zoo.convert.load_checkpoint_file` (no code from the
file runs) and handed to timm's ``load_pretrained`` as the cfg's in-memory ``state_dict``, so the family's
``checkpoint_filter_fn``, timm's classifier handling (``num_classes``) and strict loading apply as for any timm
model. ``pretrained_cfg_overlay=dict(url=...)`` or ``dict(file=...)`` points a tag at another copy of the file.

A download goes to a ``.partial`` file next to the cache entry; it enters the cache only once it is complete (the
server's Content-Length), is not an HTML page, matches its sha256 (where the cfg knows it) and loads. Any failure
removes it and raises :class:`WeightsError` naming the URL / file and what to do.

Hosts: plain HTTPS (GitHub releases and repository files through their ``raw`` links, Hugging Face ``resolve``
links, Tsinghua Cloud share links with ``?dl=1``, shi-labs.com); Google Drive needs the optional ``gdown`` client
(``pip install gdown``): a plain GET of a Drive link returns an HTML page.
"""
from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import torch
from torch import nn

from zoo.errors import UserError

__all__ = [
    "WeightsError", "official_weights", "release", "unavailable", "weights_notes", "create", "fetch",
    "checkpoint_weights", "pretrained_tags", "main",
]

_logger = logging.getLogger(__name__)

GDRIVE_HOSTS = ("drive.google.com", "docs.google.com")
GDOWN_INSTALL = "pip install gdown"
_CHUNK = 1 << 20


class WeightsError(UserError, RuntimeError):
    """Pretrained weights that cannot be fetched or used: names the tag, the URL / file and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# What the families' default_cfgs carry


def official_weights(
        url: str,
        *,
        container: str,
        file_name: Optional[str] = None,
        sha256: Optional[str] = None,
        model_args: Optional[dict[str, Any]] = None,
        notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The pretrained-cfg fields of one official file: ``url`` (``(url, file_name)`` where the URL names no file,
    e.g. a share link or a Drive folder; `file_name` is then the cache name / the file in the folder) and ``notes``
    recording the container (the layout ``checkpoint_filter_fn`` unwraps), the host, the sha256 if known (checked
    after download) and the model args the file was trained with (applied by :func:`create`)."""
    if sha256 is not None and not (len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)):
        raise ValueError(f"sha256 {sha256!r} for {url} must be 64 lowercase hex digits or None")
    host = urlparse(url).hostname or ""
    out = [f"container: {container}", f"host: {host}"]
    if host in GDRIVE_HOSTS:
        out.append(f"client: gdown ({GDOWN_INSTALL})")
    if sha256:
        out.append(f"sha256: {sha256}")
    if model_args:
        out.append(f"model_args: {model_args!r}")
    return {"url": (url, file_name) if file_name else url, "notes": (*notes, *out)}


def release(base_url: str, *, container: str) -> Callable[..., dict[str, Any]]:
    """:func:`official_weights` for the files under one `base_url` that share one `container` (a release page, a
    folder of a repository): ``release(URL, container=C)(file, **kwargs)``."""
    return lambda file, **kwargs: official_weights(base_url + file, container=container, **kwargs)


def unavailable(reason: str, *, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The pretrained-cfg fields of a tag whose official file cannot be downloaded: `reason` says why and what to
    do instead (it is the message ``pretrained=True`` raises)."""
    return {"notes": (*notes, f"unavailable: {reason}")}


def weights_notes(cfg: Any) -> dict[str, str]:
    """A pretrained cfg's ``notes`` (``'key: value'`` strings) as a dict."""
    notes = cfg.get("notes") if isinstance(cfg, dict) else getattr(cfg, "notes", None)
    out = {}
    for note in notes or ():
        key, sep, value = str(note).partition(": ")
        if sep:
            out[key] = value
    return out


def _model_args(notes: dict[str, str]) -> dict[str, Any]:
    return ast.literal_eval(notes["model_args"]) if "model_args" in notes else {}


# ---------------------------------------------------------------------------------------------------------------
# Building a model with its weights


def _resolve(variant: str, kwargs: dict[str, Any]):
    from timm.models._builder import resolve_pretrained_cfg

    return resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                  pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))


def _label(cfg) -> str:
    return f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)


def create(build: Callable[..., nn.Module], variant: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """``build(pretrained, **kwargs)`` (a family's ``build_backbone`` / ``build_model_with_cfg`` call) with the
    tag's model args applied and, with `pretrained`, its official file fetched and read safely first.

    The source follows timm's precedence: an in-memory ``state_dict``, a ``file``, then an ``hf_hub_id`` unless
    the caller's overlay names a ``url`` (timm's own Hub loader reads the DaViT copies), then the ``url``."""
    kwargs = dict(kwargs)
    cfg = _resolve(variant, kwargs)
    notes = weights_notes(cfg)
    for key, value in _model_args(notes).items():
        if key in kwargs and kwargs[key] != value and pretrained:
            raise WeightsError(f"{_label(cfg)} was trained with {key}={value!r}; pretrained=True with {key}="
                               f"{kwargs[key]!r} does not fit it (leave {key} out, or pick another tag)")
        kwargs.setdefault(key, value)
    if pretrained:
        overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
        checkpoint = None
        if cfg.state_dict is not None:
            pass  # timm loads it as given
        elif cfg.file:
            from zoo.convert import load_checkpoint_file

            checkpoint = load_checkpoint_file(cfg.file)
        elif cfg.hf_hub_id and not overlay.get("url"):
            pass  # timm's Hub loader (safetensors / weights_only)
        elif cfg.url:
            checkpoint = fetch(cfg)[1]
        else:
            reason = notes.get("unavailable") or "the zoo knows no downloadable official file for it"
            raise WeightsError(f"no pretrained weights for {_label(cfg)}: {reason}. Use pretrained=False, or "
                               f"pretrained_cfg_overlay=dict(file=PATH) with a local copy of the official file")
        if checkpoint is not None:
            overlay["state_dict"] = checkpoint_weights(checkpoint)
            kwargs["pretrained_cfg_overlay"] = overlay
    model = build(pretrained, **kwargs)
    for m in (model, getattr(model, "model", None)):  # features_only wrappers keep a copy of the cfg
        for attr in ("pretrained_cfg", "default_cfg"):
            c = getattr(m, attr, None)
            if isinstance(c, dict):
                c.pop("state_dict", None)
    return model


def checkpoint_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint the families' filters read: its tensors and its state dicts (``model``,
    ``model_ema``, ``params_ema``, ``net`` / ``net_E`` -- ``None`` entries kept, the EMOv2 filter looks at them);
    optimizer / scheduler state, configs and counters are dropped (timm copies the cfg it is passed)."""
    def is_state_dict(v: Any) -> bool:
        return isinstance(v, dict) and bool(v) and all(isinstance(t, torch.Tensor) for t in v.values())

    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    return {k: v for k, v in checkpoint.items() if v is None or isinstance(v, torch.Tensor) or is_state_dict(v)}


# ---------------------------------------------------------------------------------------------------------------
# Download, integrity, cache


def _cache_dir() -> Path:
    from timm.models._hub import get_cache_dir

    return Path(get_cache_dir())


def _source(cfg) -> tuple[str, Optional[str]]:
    url = cfg.url
    if isinstance(url, (list, tuple)):
        return str(url[0]), str(url[1])
    return str(url), None


def cache_path(cfg) -> Path:
    """Where the tag's file is cached: the URL's file name (timm's convention), or the cfg's file name where the
    URL names none (share links, Drive folders), or ``MODEL.TAG.pth``."""
    url, file_name = _source(cfg)
    parsed = urlparse(url)
    base = "" if parsed.hostname in GDRIVE_HOSTS else os.path.basename(parsed.path)  # Drive: .../view
    return _cache_dir() / (file_name or base or f"{_label(cfg)}.pth")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cfg, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """The tag's file in the cache (downloaded first if absent) and its contents (read without running code).
    Raises :class:`WeightsError` naming the URL / file; a failed download leaves nothing in the cache."""
    from zoo.convert import load_checkpoint_file

    url, file_name = _source(cfg)
    expected = weights_notes(cfg).get("sha256")
    dst = cache_path(cfg)
    what = _label(cfg)
    if dst.is_file():
        if expected and sha256_of(dst) != expected:
            actual = sha256_of(dst)
            dst.unlink()
            raise WeightsError(f"cached file {str(dst)!r} for {what} has sha256 {actual}, expected {expected}; it was "
                               f"removed: run again to download {url} afresh")
        try:
            return dst, load_checkpoint_file(dst)
        except (ValueError, OSError) as e:
            raise WeightsError(f"cached file for {what} cannot be used: {e}; delete {str(dst)!r} to download "
                               f"{url} again") from None
    partial = dst.with_name(f"{dst.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        host = urlparse(url).hostname or ""
        _logger.info("Downloading %s (%s) to %s", url, what, dst)
        if host in GDRIVE_HOSTS:
            _download_gdrive(url, file_name, partial, what)
        else:
            _download_http(url, partial, what, progress)
        if expected:
            actual = sha256_of(partial)
            if actual != expected:
                raise WeightsError(f"download of {url} for {what} ({dst.name}) has sha256 {actual}, expected "
                                   f"{expected}: the file is not the one the zoo knows (changed upstream, or "
                                   f"corrupted); nothing was cached")
        try:
            checkpoint = load_checkpoint_file(partial)
        except (ValueError, OSError) as e:
            raise WeightsError(f"download of {url} for {what} is unusable: {e}; nothing was cached") from None
        os.replace(partial, dst)
        return dst, checkpoint
    finally:
        if partial.exists():
            partial.unlink()


def _download_http(url: str, dst: Path, what: str, progress: bool) -> None:
    req = Request(url, headers={"User-Agent": "attnzoo (python urllib)"})
    try:
        with urlopen(req, timeout=60) as r:
            ctype = r.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
                raise WeightsError(f"{url} ({what}) returned an HTML page ({ctype}), not a checkpoint: the link is a "
                                   f"web page (a preview, share or login page); use the file's direct download link "
                                   f"(GitHub: /raw/ instead of /blob/, Hugging Face: /resolve/ instead of /blob/, "
                                   f"share links: ?dl=1)")
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            written = 0
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=expected, unit="B", unit_scale=True, desc=dst.name.split(".partial")[0])
            with open(dst, "wb") as f:
                while True:
                    try:
                        block = r.read(_CHUNK)
                    except Exception as e:  # noqa: BLE001 -- http.client.IncompleteRead, connection resets
                        raise WeightsError(f"download of {url} ({what}) broke off after {written} bytes"
                                           f"{f' of {expected}' if expected else ''} ({type(e).__name__}); nothing "
                                           f"was cached: run again") from None
                    if not block:
                        break
                    f.write(block)
                    written += len(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
            if expected is not None and written != expected:
                raise WeightsError(f"download of {url} ({what}) is truncated: {written} of {expected} bytes; nothing "
                                   f"was cached: run again")
    except HTTPError as e:
        raise WeightsError(f"cannot download {url} ({what}): HTTP {e.code} {e.reason}; the file has moved or is "
                           f"gone: check the official repository for a new link and pass it as "
                           f"pretrained_cfg_overlay=dict(url=...), or a local copy as dict(file=PATH)") from None
    except URLError as e:
        raise WeightsError(f"cannot download {url} ({what}): {e.reason}; check the network (or the host is down: "
                           f"pass a local copy as pretrained_cfg_overlay=dict(file=PATH))") from None
    except (TimeoutError, ConnectionError) as e:
        raise WeightsError(f"cannot download {url} ({what}): {type(e).__name__}: {e}; run again, or pass a local "
                           f"copy as pretrained_cfg_overlay=dict(file=PATH)") from None


def _download_gdrive(url: str, file_name: Optional[str], dst: Path, what: str) -> None:
    try:
        import gdown
    except ImportError:
        raise WeightsError(
            f"{what} is on Google Drive ({url}{f', file {file_name}' if file_name else ''}), which serves an HTML "
            f"page to a plain download: install the optional Drive client ({GDOWN_INSTALL}) and run again, or "
            f"download the file by hand and pass pretrained_cfg_overlay=dict(file=PATH)") from None
    if "/folders/" in url:
        if not file_name:
            raise WeightsError(f"{what}: {url} is a Drive folder and the cfg names no file in it")
        files = gdown.download_folder(url=url, skip_download=True, quiet=True) or []
        match = [f for f in files if Path(f.path).name == file_name]
        if not match:
            raise WeightsError(f"{what}: no file {file_name!r} in the Drive folder {url} (it has: "
                               f"{', '.join(sorted(Path(f.path).name for f in files)) or 'nothing readable'})")
        out = gdown.download(id=match[0].id, output=str(dst), quiet=True)
    else:
        out = gdown.download(url=url, output=str(dst), quiet=True, fuzzy=True)
    if not out or not dst.is_file():
        raise WeightsError(f"gdown could not download {url} ({what}): Drive refused it (quota exceeded or access "
                           f"changed); download it by hand and pass pretrained_cfg_overlay=dict(file=PATH)")


# ---------------------------------------------------------------------------------------------------------------
# Listing and the command line


def pretrained_tags(pattern: str = "*") -> list[tuple[str, Any]]:
    """``(model.tag, PretrainedCfg)`` of every zoo model tag matching `pattern`, with or without a file."""
    import timm.models

    import zoo

    out = []
    for name in zoo.list_models():
        for full, cfg in (timm.models.get_arch_pretrained_cfgs(name) or {}).items():
            if fnmatch.fnmatch(full, pattern) or fnmatch.fnmatch(name, pattern):
                out.append((full, cfg))
    return out


def status(cfg) -> str:
    notes = weights_notes(cfg)
    if "unavailable" in notes:
        return "unavailable"
    if cfg.hf_hub_id:
        return "hf-hub"
    if not cfg.url:
        return "none"
    return "gdown" if "client" in notes else "download"


def _list(pattern: str) -> int:
    rows = [(name, status(cfg), weights_notes(cfg).get("container", "-"), weights_notes(cfg).get("sha256", "-"),
             cfg.hf_hub_id and f"hf-hub:{cfg.hf_hub_id}" or (_source(cfg)[0] if cfg.url else
                                                            weights_notes(cfg).get("unavailable", "-")))
            for name, cfg in pretrained_tags(pattern) if cfg.url or cfg.hf_hub_id or cfg.notes]
    for row in rows:
        print("\t".join(str(c) for c in row))
    if not rows:
        print(f"no pretrained tags match {pattern!r}", file=sys.stderr)
        return 1
    return 0


def download(name: str, output: str | Path, url: Optional[str] = None, file: Optional[str] = None,
             progress: bool = True) -> Path:
    """Fetch `name`'s (``model.tag``) official file, convert it and export it (``model.safetensors`` +
    ``config.json``, loadable with ``timm.create_model('local-dir:OUTPUT', pretrained=True)`` after ``import zoo``)."""
    import timm
    from timm.data import resolve_data_config
    from timm.models import split_model_name_tag

    import zoo
    from zoo.engine.export import export_model

    arch, tag = split_model_name_tag(name)
    if arch not in zoo.list_models():
        raise WeightsError(f"{arch!r} is not a zoo model (python -m zoo.weights list shows the tags)")
    overlay = {k: v for k, v in (("url", url), ("file", file)) if v}
    kwargs = dict(pretrained_cfg=tag or None, pretrained_cfg_overlay=overlay)
    cfg = _resolve(arch, kwargs)
    source_sha = None
    if not (cfg.file or cfg.state_dict is not None or (cfg.hf_hub_id and not url)) and cfg.url:
        path, checkpoint = fetch(cfg, progress=progress)  # downloaded once, then read from the cache by create()
        source_sha = sha256_of(path)
    model_args = _model_args(weights_notes(cfg))
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay or None)
    extra = {"converted_from": str(file or url or (cfg.hf_hub_id and f"hf-hub:{cfg.hf_hub_id}") or _source(cfg)[0])}
    if source_sha:
        extra["source_sha256"] = source_sha
    return export_model(model, output, model_args=model_args, data_config=resolve_data_config(model=model),
                        pretrained_cfg={"tag": cfg.tag} if cfg.tag else None, extra=extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.weights", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list the pretrained tags: name, status, container, sha256, source")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on MODEL.TAG or MODEL (default: all)")
    dl = sub.add_parser("download", help="download, convert and export one tag's weights")
    dl.add_argument("name", help="MODEL or MODEL.TAG (the model's default tag without one)")
    dl.add_argument("--output", required=True, help="export folder (model.safetensors + config.json)")
    dl.add_argument("--url", help="download from this URL instead of the tag's")
    dl.add_argument("--file", help="convert this local copy of the official file instead of downloading")
    args = p.parse_args(argv)
    if args.cmd == "list":
        return _list(args.pattern)
    out = download(args.name, args.output, url=args.url, file=args.file)
    print(f"{args.name} -> {out} (load with timm.create_model('local-dir:{out}', pretrained=True) after import zoo)")
    return 0


if __name__ == "__main__":
    from zoo.errors import run_cli

    sys.exit(run_cli("python -m zoo.weights", main, sys.argv[1:]))
