"""README.md's model table is exactly what scripts/model_table.py generates from the registry, and the counts behind
it are right: they match the official code's measured figures, and attention FLOPs are in them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ops.channel_attention.official import channel_attention_cost
from ops.window_attention.official import window_attention_cost
from zoo.engine.flops import count_flops, model_stats

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def test_readme_model_table_is_up_to_date():
    readme = (ROOT / "README.md").read_text()
    if START not in readme or END not in readme:
        pytest.skip(f"README.md has no {START} / {END} markers yet; nothing to check")
    proc = subprocess.run([sys.executable, "scripts/model_table.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stderr}\n{proc.stdout}"


# Official code (dingmyu/davit, imported from its repository), measured: sum(p.numel()) and torch FlopCounterMode / 2
# at the official input size (timm/models/davit.py of dingmyu/davit). fvcore gives 4.540 / 8.800 / 15.510 / 102.967 G:
# it also counts the norms and the pooling, which FlopCounterMode (matmuls and convolutions only) does not.
OFFICIAL = {
    "zoo_davit_tiny": (28_360_168, 4.522),
    "zoo_davit_small": (49_745_896, 8.773),
    "zoo_davit_base": (87_954_408, 15.474),
    "zoo_davit_large": (196_811_752, 102.805),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_counts_match_the_official_code(name):
    params, gmacs = OFFICIAL[name]
    stats = model_stats(name)
    assert stats["params"] == params
    assert stats["macs"] / 1e9 == pytest.approx(gmacs, rel=5e-4)


def test_attention_flops_are_counted():
    # DaViT-T at 224: the counter's bmm FLOPs are exactly the closed-form window + channel attention FLOPs.
    stats = model_stats("zoo_davit_tiny")
    depths, heads = (1, 1, 3, 1), (3, 6, 12, 24)
    expected = 0
    for i, (depth, nh) in enumerate(zip(depths, heads)):
        size = 56 // 2 ** i
        expected += depth * window_attention_cost(1, size, size, nh, 32, 7, elem_size=2).flops_fwd
        expected += depth * channel_attention_cost(1, size * size, nh, 32, elem_size=2).flops_fwd
    assert stats["per_op"]["aten.bmm"] == expected


def test_custom_ops_are_counted_or_refused():
    pytest.importorskip("ops.channel_attention.triton")  # registers attnzoo::channel_attention_fwd / _bwd
    q = torch.empty(2, 49, 3, 16, device="meta")
    flops, _ = count_flops(torch.ops.attnzoo.channel_attention_fwd, q, q, q, 0.25)
    assert flops == channel_attention_cost(2, 49, 3, 16, elem_size=4).flops_fwd
    try:
        import ops.window_attention.triton  # noqa: F401  (registers attnzoo::window_attention_fwd / _bwd)
    except ImportError:
        pass
    if hasattr(torch.ops.attnzoo, "window_attention_fwd"):
        q = torch.empty(2, 10, 13, 2, 24, device="meta")
        flops, _ = count_flops(torch.ops.attnzoo.window_attention_fwd, q, q, q, 4, 4, None, None, 0.2)
        assert flops == window_attention_cost(2, 10, 13, 2, 24, 4, elem_size=4).flops_fwd

    if not hasattr(torch.ops.attnzoo, "_flops_test_uncounted"):
        @torch.library.custom_op("attnzoo::_flops_test_uncounted", mutates_args=())
        def uncounted(x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        uncounted.register_fake(lambda x: torch.empty_like(x))
    with pytest.raises(RuntimeError, match="without a FLOP formula"):
        count_flops(torch.ops.attnzoo._flops_test_uncounted, q)
