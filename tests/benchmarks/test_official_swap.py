"""benchmarks.official_swap: under the swap, each family's smallest model calls the official formulations, and
gives the zoo's output (same weights, same input) within fp32 tolerance; names are restored on exit."""
import pytest
import timm
import torch

import ops
import zoo  # noqa: F401  (registers the models)
from benchmarks.official_swap import OFFICIAL, official_formulation, patch_sites

# (model, input side, the ops it must call): the smallest model of every family file; HAT takes an LR input.
FAMILIES = [
    ("agent_swin_t", 112, {"agent_attention", "window_attention"}),
    ("agent_cswin_t", 112, {"agent_attention", "window_attention"}),
    ("agent_deit_t", 112, {"agent_attention"}),
    ("agent_pvt_t", 112, {"agent_attention"}),
    ("biformer_tiny", 112, {"bilevel_routing_attention", "window_attention"}),
    ("nat_mini", 112, {"neighborhood_attention_2d"}),
    ("dinat_mini", 112, {"neighborhood_attention_2d"}),
    ("vitrpb_small", 112, {"window_attention"}),
    ("emo2_1m", 112, {"window_grid_attention"}),
    ("litv2_small", 112, {"hilo_attention"}),
    ("ravlt_t", 112, {"rala", "window_attention"}),
    ("zoo_davit_tiny", 112, {"window_attention", "channel_attention"}),
    ("hat_s_x2", 32, {"window_attention", "overlapping_window_attention"}),
]


@pytest.mark.parametrize("name,size,expected", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_swap_matches_zoo_and_calls_official(name, size, expected):
    torch.manual_seed(0)
    kwargs = {} if name.startswith("hat") else {"img_size": size}
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        zoo_out = model.forward_features(x) if hasattr(model, "forward_head") else model(x)
        with official_formulation() as calls:
            official_out = model.forward_features(x) if hasattr(model, "forward_head") else model(x)
        restored = model.forward_features(x) if hasattr(model, "forward_head") else model(x)
    assert set(calls) == expected, dict(calls)
    assert all(n > 0 for n in calls.values())
    scale = zoo_out.abs().max().item()
    assert scale > 0
    err = (official_out - zoo_out).abs().max().item()
    assert err <= 1e-4 * scale + 1e-6, f"{name}: max |official - zoo| = {err:.3g} at output scale {scale:.3g}"
    assert torch.equal(restored, zoo_out)


def test_names_restored_and_errors():
    sites = patch_sites()
    assert {s[2] for s in sites} == set(OFFICIAL)  # every op is bound somewhere in the zoo
    before = [getattr(m, a) for m, a, _ in sites]
    with pytest.raises(RuntimeError, match="boom"):
        with official_formulation():
            assert all(getattr(m, a) is not f for (m, a, _), f in zip(sites, before))
            raise RuntimeError("boom")
    assert [getattr(m, a) for m, a, _ in sites] == before
    with pytest.raises(ValueError, match="not_an_op"):
        with official_formulation(only=("not_an_op",)):
            pass


def test_adapters_match_ops_on_paths_the_small_models_miss():
    """HiLo with Hi-Fi heads only, window-grid attention's single partitions, non-square windows."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 10, 12, 3, 8) for _ in range(3))
    hifi = OFFICIAL["hilo_attention"][1](q, k, v, None, None, None, 4)
    want = ops.hilo_attention(q, k, v, None, None, None, 4, backend="reference")
    assert hifi[1] is None and want[1] is None
    torch.testing.assert_close(hifi[0], want[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="partition='grid'"):
        OFFICIAL["window_grid_attention"][1](q, k, v, 4, partition="grid")
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        OFFICIAL["bilevel_routing_attention"][1](q, k, v, (2, 4), 1)
    table = torch.randn(3, 3, 7)
    got = OFFICIAL["window_attention"][1](q, k, v, (2, 4), bias_table=table)
    torch.testing.assert_close(got, ops.window_attention(q, k, v, (2, 4), bias_table=table, backend="reference"),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["nat_mini", "biformer_tiny"])
def test_swap_gradients_match_zoo(name):
    """The backward through the official formulations gives the zoo's parameter gradients (what the memory
    benchmark's official step differentiates)."""
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=64).train()
    x = torch.randn(2, 3, 64, 64)

    def grads():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    zoo_grads = grads()
    with official_formulation() as calls:
        official_grads = grads()
    assert calls and zoo_grads.keys() == official_grads.keys()
    for n, g in zoo_grads.items():
        torch.testing.assert_close(official_grads[n], g, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} {n}: {m}")
