"""Agent-DeiT: official checkpoint conversion, ViT conventions (NLC features, class token), any size, Triton path.

The official key layout (`fixtures/agent_deit_official_t_keys.json`: names and shapes only) was generated once from
https://github.com/LeapLabTHU/Agent-Attention (`207ce3e`, `agent_transformer/models/agent_deit.py` and `deit.py`,
`register_model` stripped because timm-0.4 cfg dicts crash timm 1.x registration) with
``{k: list(v.shape) for k, v in VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12,
num_heads=3, agent_num=[49] * 4).state_dict().items()}`` (what ``agent_deit_tiny`` builds).

Parity, measured once outside the suite (fp32, CPU, batch 2): the official model with every parameter perturbed by
N(0, 0.02), loaded into the zoo model through `checkpoint_filter_fn` (strict), max |logit difference|:

| model | input | max abs diff | max abs logit |
|---|---|---|---|
| agent_deit_t | 224x224 | 8.9e-7 | 1.46 |
| agent_deit_b (blocks 4-11 timm's softmax Block) | 224x224 | 2.0e-6 | 3.03 |
| agent_deit_s_448 | 448x448 | 1.2e-6 | 1.90 |

The official model runs only at its training size; other sizes (tested here) resize the position embedding and
the agent biases (the bias maps' resizing itself is tested in tests/ops/test_agent_attention.py).
"""
import json
import math
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
from zoo.models.agent_deit import AgentDeiT, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_deit.py)
    'agent_deit_t': 6_015_640,
    'agent_deit_s': 22_647_112,
    'agent_deit_s_448': 23_070_472,
    'agent_deit_b': 87_204_904,
}
VARIANTS = ('agent_deit_t', 'agent_deit_s', 'agent_deit_s_448', 'agent_deit_b')
# A narrow model with the official structure (agent and plain blocks) keeps CPU tests fast.
SMALL = dict(embed_dim=32, depth=3, num_heads=2, agent_num=9, agent_layer=2, num_classes=10)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(seed: int = 0) -> dict:
    keys = json.loads((FIXTURES / 'agent_deit_official_t_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * 0.05 for name, shape in keys.items()}


def test_official_layout_converts_and_loads_strict():
    official = _official_state_dict()
    model = timm.create_model('agent_deit_t')
    converted = checkpoint_filter_fn({'model': official, 'optimizer': {}, 'max_accuracy': 74.9}, model)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.blocks[5].attn.ac_bias, official['blocks.5.attn.ac_bias'])
    own = model.state_dict()
    assert checkpoint_filter_fn(own, model).keys() == own.keys()
    wrapped = checkpoint_filter_fn({'model': {f'module.{k}': v for k, v in own.items()}}, model)
    assert wrapped.keys() == own.keys()


def test_official_224_checkpoint_into_a_448_model():
    """agent_deit_s_448's grid from a 224 checkpoint, as the official load_pretrained does it: the position
    embedding bicubically (class token kept), ah/aw/ha/wa linearly along their spatial axis."""
    official = _official_state_dict()
    model = AgentDeiT(img_size=448, embed_dim=192, num_heads=3)
    model.load_state_dict(checkpoint_filter_fn({'model': official}, model), strict=True)
    pos = official['pos_embed']
    grid = F.interpolate(pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(28, 28), mode='bicubic')
    want = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 784, -1)], dim=1)
    assert_close(model.pos_embed.detach(), want, atol=1e-6, rtol=1e-6)
    ha = official['blocks.0.attn.ha_bias']  # (1, heads, 14, 1, agents)
    want = F.interpolate(ha[0, :, :, 0].transpose(1, 2), size=28, mode='linear').transpose(1, 2)[None, :, :, None]
    assert_close(model.blocks[0].attn.ha_bias.detach(), want, atol=1e-6, rtol=1e-6)


def test_vit_conventions():
    """NLC features with the class token first, head on the class token ('token') or the patch mean ('avg'),
    NCHW intermediates at stride 16, features_only through forward_intermediates."""
    torch.manual_seed(0)
    model = AgentDeiT(**SMALL).eval()
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1 + 3 * 5, 32) and model.output_fmt == 'NLC' and model.num_prefix_tokens == 1
        assert_close(model.forward_head(feats, pre_logits=True), feats[:, 0], atol=0, rtol=0)
        final, inter = model.forward_intermediates(x)
        assert_close(final, feats, atol=0, rtol=0)
        assert [tuple(t.shape) for t in inter] == [(2, 32, 3, 5)] * 3
        pairs = model.forward_intermediates(x, indices=[1], return_prefix_tokens=True, intermediates_only=True)
        assert pairs[0][0].shape == (2, 32, 3, 5) and pairs[0][1].shape == (2, 1, 32)
        model.reset_classifier(0, 'avg')
        assert_close(model(x), feats[:, 1:].mean(1), atol=1e-6, rtol=1e-6)
    torch.manual_seed(0)
    feat_model = timm.create_model('agent_deit_t', features_only=True, out_indices=(3, 7, 11)).eval()
    with torch.no_grad():
        outs = feat_model(torch.randn(1, 3, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 192, 2, 4)] * 3


@pytest.mark.parametrize('size', [(224, 224), (160, 96), (16, 48)])
def test_any_multiple_of_the_patch_size(size):
    """Square or not, smaller or larger than the training grid: the position embedding is resized bicubically and
    the agent biases to the grid; at 224 nothing is resized."""
    torch.manual_seed(0)
    model = AgentDeiT(**SMALL).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    grid = (size[0] // 16, size[1] // 16)
    embedded, got_grid = model._embed(x)
    assert got_grid == grid and embedded.shape[1] == 1 + math.prod(grid)
    with pytest.raises(ValueError, match='input 50x48 is not a multiple of the patch size 16x16'):
        model(torch.randn(1, 3, 50, 48))


def test_grad_checkpointing_and_every_gradient():
    torch.manual_seed(0)
    model = AgentDeiT(**SMALL).train()
    x = torch.randn(2, 3, 32, 48)
    model(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g.abs().sum() > 0 for g in grads.values())
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    for n, p in model.named_parameters():
        assert_close(p.grad, grads[n], atol=1e-5, rtol=1e-4, name=n)


def test_triton_backend_through_the_model():
    """Forward and every parameter gradient with the Triton kernels (the interpreter here) match the reference."""
    torch.manual_seed(0)
    model = AgentDeiT(**SMALL).train()
    x = torch.randn(1, 3, 48, 64)

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


def test_agent_deit_b_layout():
    """Blocks 0-3 agent attention with 81 agents, 4-11 timm's own softmax ViT Block (official agent_layer=4)."""
    from timm.models.vision_transformer import Block
    with torch.device('meta'):
        model = timm.create_model('agent_deit_b')
    kinds = [type(b).__name__ for b in model.blocks]
    assert kinds == ['AgentBlock'] * 4 + ['Block'] * 8 and isinstance(model.blocks[4], Block)
    assert model.blocks[0].attn.agent_num == 81


@pytest.mark.parametrize('name', VARIANTS)
def test_meta_forward_at_default_size(name):
    with torch.device('meta'):
        model = timm.create_model(name).eval()
    size = model.pretrained_cfg['input_size']
    assert model(torch.empty(2, *size, device='meta')).shape == (2, 1000)
    assert model.grid_size == (size[1] // 16, size[2] // 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match='perfect square, got 50'):
        AgentDeiT(agent_num=50)
    with pytest.raises(ValueError, match=r'agent_num must be a positive int or a tuple of 12 .* got \(49, 49\)'):
        AgentDeiT(agent_num=(49, 49))
    with pytest.raises(ValueError, match='agent_layer must be in'):
        AgentDeiT(agent_layer=13)
    with pytest.raises(ValueError, match="global_pool must be 'token', 'avg' or ''"):
        AgentDeiT(global_pool='max')


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'agent_deit_t'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['swin_yacs'](_official_state_dict(seed=seed)), {}
