"""Agent-PVT: official checkpoint conversion, grid resizing, the Triton path through the model, argument errors.

The official key layout (`fixtures/agent_pvt_official_t_keys.json`: names and shapes only) was generated once from
https://github.com/LeapLabTHU/Agent-Attention (`207ce3e`, `agent_transformer/models/agent_pvt.py`, `register_model`
stripped because timm-0.4 cfg dicts crash timm 1.x registration) with
``{k: list(v.shape) for k, v in agent_pvt_tiny(img_size=224, agent_num=[9, 16, 49, 49], attn_type='AAAA',
agent_sr_ratios='1111').state_dict().items()}``.

Parity, measured once outside the suite (fp32, CPU, batch 2): the official model with every parameter perturbed by
N(0, 0.02), loaded into the zoo model through `checkpoint_filter_fn` (strict), max |logit difference|:

| model | input | max abs diff | max abs logit |
|---|---|---|---|
| agent_pvt_t | 224x224 | 4.8e-7 | 1.41 |
| agent_pvt_s | 224x224 | 7.2e-7 | 1.79 |
| agent_pvt_m_256 | 256x256 | 7.2e-7 | 1.95 |

The official classification model runs only at its training size (its biases are sized by it); other sizes follow
the official segmentation backbone (`downstream/segmentation/mmseg/models/backbones/agent_pvt.py`, mmseg imports
stripped, ``attn_type='AAAA'``, ``downstream_agent_shapes`` = the classification agent grids): its four stage maps
against ``forward_intermediates`` of agent_pvt_t with the same perturbed weights, max |difference| per stage (map
scale ~5): 256x320: 0, 3.1e-6, 4.5e-6, 6.9e-6; 160x96: 0, 2.9e-6, 4.4e-6, 5.7e-6; 224x224: 0, 2.9e-6, 4.1e-6, 7.4e-6.
The bias maps' resizing itself is tested in tests/ops/test_agent_attention.py.
"""
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ops
import timm
from tests.official_containers import CONTAINERS
import zoo  # noqa: F401  (registers the zoo models)
from tests.utils import assert_close
from zoo.layers.agent import resize_agent_bias
from zoo.models.agent_pvt import AgentPVT, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_pvt.py)
    'agent_pvt_t': 11_570_352,
    'agent_pvt_s': 20_635_066,
    'agent_pvt_m': 35_921_746,
    'agent_pvt_m_256': 36_083_682,
    'agent_pvt_l': 48_738_180,
}


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(seed: int = 0) -> dict:
    keys = json.loads((FIXTURES / 'agent_pvt_official_t_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * 0.05 for name, shape in keys.items()}


def test_official_layout_converts_and_loads_strict():
    official = _official_state_dict()
    model = timm.create_model('agent_pvt_t')
    converted = checkpoint_filter_fn({'model': official, 'optimizer': {}, 'epoch': 3}, model)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.stages[2].blocks[1].attn.ah_bias, official['block3.1.attn.ah_bias'])
    assert torch.equal(model.stages[0].pos_embed, official['pos_embed1'])
    assert torch.equal(model.head.fc.weight, official['head.weight'])
    # the zoo's own layout (and a DDP prefix on it) passes through unchanged
    own = model.state_dict()
    passed = checkpoint_filter_fn(own, model)  # the zoo's own layout, same sizes: every tensor as it was
    assert list(passed) == list(own) and all(passed[k] is own[k] for k in own)
    wrapped = checkpoint_filter_fn({'model': {f'module.{k}': v for k, v in own.items()}}, model)
    assert wrapped.keys() == own.keys()


def test_official_224_checkpoint_into_a_256_model():
    """Grid-sized tensors are resized as the official load_pretrained does: position embeddings bicubically,
    ah/aw/ha/wa linearly along their spatial axis (what agent_pvt_m_256 fine-tuning from 224 did)."""
    official = _official_state_dict()
    model = AgentPVT(img_size=256, depths=(2, 2, 2, 2))
    model.load_state_dict(checkpoint_filter_fn({'model': official}, model), strict=True)
    ah = official['block1.0.attn.ah_bias']  # (1, heads, agents, 56, 1)
    want = F.interpolate(ah.squeeze(0).squeeze(-1), size=64, mode='linear').unsqueeze(-1).unsqueeze(0)
    assert_close(model.stages[0].blocks[0].attn.ah_bias.detach(), want, atol=1e-6, rtol=1e-6)
    wa = official['block2.1.attn.wa_bias']  # (1, heads, 1, 28, agents)
    want = F.interpolate(wa.squeeze(0).squeeze(1).transpose(1, 2), size=32, mode='linear')
    assert_close(model.stages[1].blocks[1].attn.wa_bias.detach(), want.transpose(1, 2)[None, :, None], atol=1e-6,
                 rtol=1e-6)
    pos = official['pos_embed4'].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    want = F.interpolate(pos, size=(8, 8), mode='bicubic').permute(0, 2, 3, 1).reshape(1, 64, -1)
    assert_close(model.stages[3].pos_embed.detach(), want, atol=1e-6, rtol=1e-6)
    assert resize_agent_bias(ah, 'ah_bias', ah.shape) is ah


def test_position_embedding_resized_bilinearly_off_the_training_grid():
    stage = timm.create_model('agent_pvt_t').stages[1]
    assert torch.equal(stage._pos_embed(28, 28), stage.pos_embed.reshape(1, 28, 28, -1))
    want = F.interpolate(stage.pos_embed.reshape(1, 28, 28, -1).permute(0, 3, 1, 2), size=(6, 10), mode='bilinear')
    assert_close(stage._pos_embed(6, 10).detach(), want.permute(0, 2, 3, 1).detach(), atol=1e-6, rtol=1e-6)


def test_triton_backend_through_the_model():
    """The model's forward and every parameter gradient with the Triton kernels (the interpreter here) match the
    reference backend, at a size off the training grid (64x96: 16x24 .. 2x3 maps, agents pooled up on the last);
    a narrow one-block-per-stage model keeps the interpreter fast."""
    torch.manual_seed(0)
    model = AgentPVT(num_classes=10, embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1)).train()
    x = torch.randn(1, 3, 64, 96)

    def run(backend):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out_t, grads_t = run('triton')
    out_r, grads_r = run('reference')
    assert_close(out_t, out_r, atol=1e-4, rtol=1e-4, name='logits')
    for name, g in grads_r.items():
        assert_close(grads_t[name], g, atol=1e-4, rtol=1e-3, name=name)


def test_agent_grids_reach_every_block():
    """The segmentation setting: per-stage agent grids (official downstream_agent_shapes) replace sqrt(agent_num)."""
    grids = ((12, 12), (16, 16), (28, 28), (28, 28))
    torch.manual_seed(0)
    model = AgentPVT(depths=(1, 1, 1, 1), agent_grids=grids, num_classes=0).eval()
    for stage, grid in zip(model.stages, grids):
        assert all(block.attn.agent_grid == grid for block in stage.blocks)
    plain = AgentPVT(depths=(1, 1, 1, 1), num_classes=0).eval()
    plain.load_state_dict(model.state_dict())  # same parameters: the grid is a setting, not a weight
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = model.forward_intermediates(x, intermediates_only=True)
        b = plain.forward_intermediates(x, intermediates_only=True)
    assert [t.shape for t in a] == [t.shape for t in b]
    assert not torch.allclose(a[0], b[0])  # 144 agents instead of 9 change the result
    with pytest.raises(ValueError, match='agent_grids .* must have 4 entries'):
        AgentPVT(agent_grids=((12, 12),))


def test_bad_arguments():
    with pytest.raises(ValueError, match='perfect square, got 10'):
        AgentPVT(agent_num=(9, 16, 49, 10))
    with pytest.raises(ValueError, match='must have one length'):
        AgentPVT(depths=(2, 2, 2))
    with pytest.raises(ValueError, match='not a multiple of num_heads 3'):
        AgentPVT(num_heads=(1, 3, 5, 8))


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'agent_pvt_t'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['swin_yacs'](_official_state_dict(seed=seed)), {}
