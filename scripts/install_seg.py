"""Install the segmentation stack (mmengine, mmcv with compiled ops, mmsegmentation) into the current environment.

    python scripts/install_seg.py            # after `pip install -e .` (torch must already be installed)

Why a script and not a pip extra: PyPI ships no mmcv wheel for current torch, mmsegmentation 1.2 needs
``mmcv>=2.0.0rc4,<2.2.0`` with ``mmcv.ops`` compiled (``mmcv-lite`` is not enough), and mmcv 2.1.0's sdist
cannot build against current torch as published: its ``setup.py`` imports ``pkg_resources`` (gone from the
setuptools torch needs) and hard-codes ``-std=c++14/17`` while torch's headers need C++20. This script

1. downloads the mmcv sdist from the package index (``PIP_INDEX_URL``, default PyPI) and checks its sha256,
2. patches exactly those two things (nothing else in mmcv changes),
3. builds a wheel once (CPU ops; CUDA ops too where ``torch.cuda.is_available()`` or ``FORCE_CUDA=1``) and
   keeps it in pip's cache directory, keyed by torch version, Python version and CPU/CUDA, so a second run, or
   a new virtual environment on the same machine, installs in seconds,
4. installs that wheel and the ``seg`` extra of pyproject.toml (mmengine, mmsegmentation, ...), and checks that
   ``mmseg.models`` imports.

About 20 minutes on 2 cores for the first build; ``MAX_JOBS`` (default: all cores) sets the compile jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

MMCV_VERSION = "2.1.0"
MMCV_SDIST_SHA256 = "d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def seg_requirements() -> list[str]:
    """The ``seg`` extra of pyproject.toml (mmengine, mmsegmentation and what mmseg imports undeclared)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the TOML reader pip vendors
        from pip._vendor import tomli as tomllib

    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["seg"]


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _with_cuda() -> bool:
    import torch

    return torch.cuda.is_available() or os.environ.get("FORCE_CUDA", "0") == "1"


def wheel_cache_dir() -> Path:
    """pip's cache directory / attnzoo-wheels / <torch>-<python>-<cpu|cuda>: one built mmcv per combination."""
    import torch

    out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    root = Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else Path.home() / ".cache" / "pip"
    flavour = f"cuda{torch.version.cuda}" if _with_cuda() else "cpu"
    key = f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info.major}{sys.version_info.minor}-{flavour}"
    return root / "attnzoo-wheels" / key


def patch_setup_py(text: str) -> str:
    """The two source changes current torch needs; fails loudly if the sdist is not the one they were written for."""
    old_import = "from pkg_resources import DistributionNotFound, get_distribution, parse_version\n"
    if old_import not in text:
        raise RuntimeError("mmcv setup.py: the pkg_resources import to replace was not found (unexpected sdist)")
    text = text.replace(
        old_import,
        "from importlib.metadata import PackageNotFoundError as DistributionNotFound\n"
        "from importlib.metadata import distribution as get_distribution\n"
        "from packaging.version import parse as parse_version\n",
    )
    text, n = re.subn(r"([-/]std[=:]c\+\+)1[47]", r"\g<1>20", text)
    if n == 0:
        raise RuntimeError("mmcv setup.py: no -std=c++14/17 flags found to raise (unexpected sdist)")
    return text


def download_sdist(dest: Path) -> Path:
    """Fetch the sdist through the simple index (``pip download`` would run the unpatched setup.py for metadata)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    name = f"mmcv-{MMCV_VERSION}.tar.gz"
    page = urllib.request.urlopen(f"{index}/mmcv/", timeout=60).read().decode()
    links = [m for m in re.findall(r'href="([^"]+)"', page) if urllib.parse.urlsplit(m).path.endswith("/" + name)]
    if not links:
        raise RuntimeError(f"{index}/mmcv/ lists no {name}")
    url = urllib.parse.urljoin(f"{index}/mmcv/", html.unescape(links[0]))
    print(f"downloading {urllib.parse.urlsplit(url)._replace(fragment='').geturl()}", flush=True)
    path = dest / name
    path.write_bytes(urllib.request.urlopen(url, timeout=300).read())
    return path


def build_wheel(dest: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="attnzoo-mmcv-") as tmp:
        tmp = Path(tmp)
        sdist = download_sdist(tmp)
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != MMCV_SDIST_SHA256:
            raise RuntimeError(f"{sdist.name}: sha256 {digest}, expected {MMCV_SDIST_SHA256}")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / f"mmcv-{MMCV_VERSION}"
        setup_py = src / "setup.py"
        setup_py.write_text(patch_setup_py(setup_py.read_text()))
        env = dict(os.environ, MMCV_WITH_OPS="1")
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        print(f"building mmcv {MMCV_VERSION} with compiled ops ({'CPU + CUDA' if _with_cuda() else 'CPU'}), "
              f"MAX_JOBS={env['MAX_JOBS']}; about 20 minutes on 2 cores", flush=True)
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "-w", str(tmp / "dist"), str(src)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env)
        (built,) = (tmp / "dist").glob("mmcv-*.whl")
        shutil.copy2(built, dest / built.name)  # copy last, so an interrupted build leaves no half wheel behind
        return dest / built.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build mmcv again even if a cached wheel exists")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        print("install_seg: torch is not installed in this environment; run `pip install -e .` first", file=sys.stderr)
        return 2

    # the build needs ninja (parallel compile) and packaging (the patched version parsing)
    _pip("install", "ninja", "packaging", "wheel")
    cache = wheel_cache_dir()
    wheels = sorted(cache.glob(f"mmcv-{MMCV_VERSION}-*.whl"))
    if wheels and not args.rebuild:
        wheel = wheels[-1]
        print(f"reusing the mmcv wheel built earlier: {wheel}", flush=True)
    else:
        wheel = build_wheel(cache)
    _pip("install", str(wheel), *seg_requirements())
    check = "import mmcv, mmcv.ops, mmseg, mmseg.models; print('mmcv', mmcv.__version__, 'mmseg', mmseg.__version__)"
    subprocess.run([sys.executable, "-c", check], check=True)
    print(f"install_seg: done on {platform.machine()} (mmcv wheel: {wheel.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
