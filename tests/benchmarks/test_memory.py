"""benchmarks.memory: the step counter on hand-made cases whose bytes are known exactly, and one family's step."""
import pytest
import timm
import torch
from timm.models import model_entrypoint

import zoo.models
from benchmarks.memory import FAMILIES, StepCounter, format_table, measure_step


def test_saved_bytes_exact_and_deduplicated():
    x = torch.randn(4, 8)  # the input and the weight are excluded
    w = torch.randn(8, 8, requires_grad=True)
    counter = StepCounter(exclude=[x, w])
    with counter:
        with counter.saving():
            y = x @ w  # mm saves x and w: excluded
            z = y.exp()  # exp saves its output z: 128 B
            u = z.view(32)
            m = u * u  # saves u twice: z's storage again, counted once
            t = y.sin()  # saves y: 128 B
            loss = m.sum() + t.sum()  # sum saves no tensor
        loss.backward()
    r = counter.result(ignore=[w.grad])
    assert (r.saved_bytes, r.saved_storages) == (256, 2)
    assert torch.allclose(w.grad, x.t() @ (2 * z * z + y.cos()))  # the counter does not change the step


def test_peak_live_bytes_exact():
    counter = StepCounter()
    with counter:
        a = torch.empty(1000, device="meta")  # 4000 B
        b = torch.empty(500, device="meta")  # 6000 live
        del a  # 2000 live
        c = torch.empty(3000, device="meta")  # 14000 live: the peak
        c2 = c.view(30, 100)  # a view allocates nothing
        del b, c, c2  # 0 live
        d = torch.empty(3000, device="meta", dtype=torch.float16)  # 6000 live
    assert counter.result().peak_bytes == 14000
    assert counter.result(ignore=[d]).peak_bytes == 14000
    assert counter.result().saved_bytes == 0


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_param_grads_are_left_out_of_the_peak(device):
    """Also on the meta device, where the benchmark runs: the backward's allocations are seen there too."""
    x = torch.randn(256, device=device)
    w = torch.randn(256, device=device, requires_grad=True)
    counter = StepCounter(exclude=[x, w])
    with counter:
        with counter.saving():
            loss = (x * w).sum()
        loss.backward()
    with_grad, without = counter.result().peak_bytes, counter.result(ignore=[w.grad]).peak_bytes
    assert without == 1024 + 4  # the forward: x * w, then the loss while x * w is alive
    assert with_grad == 4 + 4 + 1024  # the backward: the loss, its gradient (ones), w.grad = grad * x
    assert counter.result().saved_bytes == 0  # mul saved only x and w


def test_families_cover_every_family_file():
    modules = {model_entrypoint(n).__module__ for n in zoo.models.list_models()}
    assert {model_entrypoint(f.model).__module__ for f in FAMILIES} == modules
    for f in FAMILIES:
        assert f.model in timm.list_models()


def test_official_step_saves_the_gather_the_zoo_does_not():
    """NAT-Mini at 64x64: the official unfold saves (B, heads, H, W, k*k, D) gathered keys / values, the Triton
    op saves only q, k, v, out and the log-sum-exps."""
    nat = next(f for f in FAMILIES if f.model == "nat_mini")
    official, zoo_, ref = (measure_step(nat, 64, f) for f in ("official", "zoo", "zoo-ref"))
    assert zoo_.saved_bytes < official.saved_bytes / 2
    assert zoo_.peak_bytes < official.peak_bytes / 2
    assert 0 < zoo_.saved_bytes <= zoo_.peak_bytes
    table = format_table([dict(family="NAT", model="nat_mini", side=64, input_side=64,
                               memory={"official": official, "zoo": zoo_, "zoo-ref": ref})])
    assert table.count("\n") == 2 and "| NAT | `nat_mini` | 64 (64) |" in table
