"""scripts/install_seg.py: the two source patches mmcv 2.1.0 needs, and the wheel cache key (no network, no build)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_seg.py"
spec = importlib.util.spec_from_file_location("install_seg", SCRIPT)
install_seg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_seg)

# the lines of mmcv 2.1.0's setup.py that the patch touches, as the sdist has them
SETUP_EXCERPT = """\
import os
from pkg_resources import DistributionNotFound, get_distribution, parse_version
from setuptools import find_packages, setup
            'nvcc': [cuda_args, '-std=c++14'] if cuda_args else ['-std=c++14'],
            'cxx': ['-std=c++14'],
                extra_compile_args['cxx'] = ['-std=c++17']
                extra_compile_args['cxx'] = ['/std:c++17']
            extra_compile_args['cxx'] = ['-Wall', '-std=c++17']
                extra_compile_args['nvcc'] += ['-std=c++17']
"""


def test_patch_raises_every_language_standard_and_drops_pkg_resources():
    out = install_seg.patch_setup_py(SETUP_EXCERPT)
    assert "pkg_resources" not in out
    assert "c++14" not in out and "c++17" not in out
    assert out.count("-std=c++20") == 6 and out.count("/std:c++20") == 1
    namespace = {}
    exec("\n".join(line for line in out.splitlines() if line.startswith("from importlib")
                   or line.startswith("from packaging")), namespace)
    assert namespace["parse_version"]("2.14.1") > namespace["parse_version"]("1.12.1")
    with pytest.raises(namespace["DistributionNotFound"]):
        namespace["get_distribution"]("no-such-distribution-attnzoo")


def test_patch_refuses_an_unexpected_sdist():
    with pytest.raises(RuntimeError, match="pkg_resources import to replace was not found"):
        install_seg.patch_setup_py("from setuptools import setup\n")
    with pytest.raises(RuntimeError, match="no -std=c\\+\\+14/17 flags"):
        install_seg.patch_setup_py("from pkg_resources import DistributionNotFound, get_distribution, parse_version\n")


def test_wheel_cache_is_keyed_by_torch_python_and_device(monkeypatch):
    import sys

    import torch

    key = install_seg.wheel_cache_dir().name
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert key.startswith(f"torch{torch.__version__.replace('+', '_')}-{python}-")
    monkeypatch.setenv("FORCE_CUDA", "1")
    assert install_seg.wheel_cache_dir().name.endswith(f"cuda{torch.version.cuda}")
    assert install_seg.wheel_cache_dir().parent.name == "attnzoo-wheels"


def test_seg_requirements_come_from_pyproject():
    reqs = install_seg.seg_requirements()
    assert any(r.startswith("mmsegmentation") for r in reqs) and any(r.startswith("mmengine") for r in reqs)
