"""Whole-image segmentation inference compiles a bounded number of kernel versions whatever the image size
(issue 19, item 4; NA / DiNAT: tests/ops/test_na_recompiles.py).

mmseg's whole-image inference feeds each test image at its own size, so every map size that reached a kernel as a
compile-time constant (BiFormer's region, a whole-map window) or as an integer Triton specialises (value 1,
multiple of 16: H, W, token counts, grid sizes) compiled new kernels on the first image of that size. The kernels
now take those as unspecialised runtime arguments (each op's ``_MAP_SIZE_ARGS`` / ``_SIZE_ARGS``); what still
varies is the tiles (a window's token count rounded up to a power of two) and the plans (key-range splits).

How, without a GPU: ``python -m benchmarks.compile_check --count-keys`` runs each seg config's backbone (with
its ``model_kwargs``) forward on the meta device in eval mode with ``backend='triton'`` at five ADE20K-style
whole-image sizes, replays every op call through the wrappers' real launch plans for sm_90, and keys every
launch as Triton's launcher keys its cache (the binder's specialisation of every argument, constexprs, warps,
stages). The count is of distinct keys per kernel, summed per model. It runs in a subprocess: the key needs the
kernels as ``JITFunction``s, and this process may have imported triton for its interpreter.

Counts measured on 2026-12-07 (sum over kernels, five sizes), before (commit 08f9f69) -> after:
BiFormer-S 20 -> 6, DaViT-T 7 -> 4, Agent-PVT-T 12 -> 8, Agent-Swin-T 9 -> 5, EMOv2-1M 10 -> 10, LITv2-S
8 -> 2, RAVLT-T 18 -> 9. What is left: per-stage tiles (BiFormer's four region sizes, RAVLT's four stages with
one or more heads), Agent-PVT's forward key-range splits (their count follows the token count), and EMOv2's
window-grid kernel, whose k / v / out strides change divisibility with the map size (not fixed here).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The smallest model of each family with segmentation configs (configs/seg/; NA / DiNAT are tested apart) ->
# the most kernel versions its whole-image inference over IMAGE_SIZES may compile (sum over its kernels).
BOUNDS = {
    "configs/seg/biformer/fpn_biformer_small_ade20k_512x512_80k.py": 6,
    "configs/seg/davit/upernet_davit_tiny_ade20k_512x512_160k.py": 4,
    "configs/seg/agent/fpn_agent_pvt_t_ade20k_512x512_40k.py": 8,
    "configs/seg/agent/upernet_agent_swin_t_ade20k_512x512_160k.py": 5,
    "configs/seg/emov2/fpn_emo2_1m_ade20k_512x512_160k.py": 10,
    "configs/seg/litv2/fpn_litv2_small_ade20k_512x512_80k.py": 2,
    "configs/seg/ravlt/fpn_ravlt_t_ade20k_512x512_80k.py": 9,
}

# ADE20K-style whole-image inference sizes (H x W): 3:4, square, larger 3:4, 4:3 portrait, a panorama.
IMAGE_SIZES = ("512x683", "512x512", "640x853", "480x640", "384x1024")

# Kernels whose map-dependent sizes are runtime arguments: one version per tile shape, whatever the image size.
# BiFormer-S's last stage (one region = the whole map) and RAVLT-T's softmax stages (whole-map windows) are the
# cases that compiled one version per image size before.
AT_MOST = {
    ("configs/seg/biformer/fpn_biformer_small_ade20k_512x512_80k.py", "window_attention_fwd_kernel"): 1,
    ("configs/seg/ravlt/fpn_ravlt_t_ade20k_512x512_80k.py", "window_attention_fwd_kernel"): 1,
    ("configs/seg/litv2/fpn_litv2_small_ade20k_512x512_80k.py", "lofi_attention_fwd_kernel"): 1,
}


@pytest.fixture(scope="module")
def counts() -> dict[str, dict[str, int]]:
    pytest.importorskip("mmengine")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_check", "--count-keys", *BOUNDS, "--image-sizes", *IMAGE_SIZES],
        cwd=ROOT, env=env, check=True, timeout=900, capture_output=True, text=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("config", sorted(BOUNDS), ids=lambda c: Path(c).stem)
def test_whole_image_inference_compiles_a_bounded_number_of_kernels(counts, config):
    per_kernel = counts[config]
    assert per_kernel, f"{config}: no Triton launch recorded"
    total = sum(per_kernel.values())
    assert total <= BOUNDS[config], f"{config}: {total} kernel versions over {len(IMAGE_SIZES)} sizes: {per_kernel}"


@pytest.mark.parametrize("config, kernel", sorted(AT_MOST), ids=lambda v: Path(v).stem if "/" in v else v)
def test_whole_map_sizes_do_not_recompile(counts, config, kernel):
    assert 1 <= counts[config].get(kernel, 0) <= AT_MOST[(config, kernel)], counts[config]
