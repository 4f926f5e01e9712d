"""zoo.layers.agent: the agent-attention module and checkpoint helpers shared by the Agent-Attention families.

The module is checked against a naive float64 formulation written out here (pool the patch queries into agents,
softmax over the tokens, softmax over the agents, depth-wise conv of V, output projection), with the position
biases from ``ops.agent_bias_maps`` (tested in tests/ops/test_agent_attention.py), for the three projection
layouts the families use: one ``qkv`` Linear on a map (Agent-Swin), ``q`` + ``kv`` (Agent-PVT), and tokens with a
class token in front (Agent-DeiT); Agent-CSWin's branch runs `AgentAttentionBase.attend` on given q, k, v.
"""
import pytest
import torch
import torch.nn.functional as F

import ops
from tests.utils import assert_close
from zoo.layers.agent import (
    AGENT_BIASES, AgentAttention, AgentAttentionBase, AgentBlock, parse_attn_type, resize_agent_bias, resize_pos_embed,
)
from zoo.layers.backbone import unwrap_checkpoint


def _naive(m: AgentAttention, x: torch.Tensor, grid, prefix: int) -> torch.Tensor:
    """float64 agent attention + DWC + proj of `m` on ``(B, prefix + H*W, C)`` tokens, written out."""
    m = m.double()
    x = x.double()
    B, N, C = x.shape
    H, W = grid
    heads, d = m.num_heads, m.head_dim
    if m.fused_qkv:
        q, k, v = m.qkv(x).split(C, dim=-1)
    else:
        q = m.q(x)
        k, v = m.kv(x).split(C, dim=-1)
    patch_q = q[:, prefix:].transpose(1, 2).reshape(B, C, H, W)
    agents = F.adaptive_avg_pool2d(patch_q, m.pool_size).flatten(2).transpose(1, 2)  # (B, a, C)
    cls = dict(cls_agent_bias=m.ac_bias, cls_query_bias=m.ca_bias) if prefix else {}
    agent_bias, query_bias = ops.agent_bias_maps(*(getattr(m, n) for n in AGENT_BIASES), (H, W), **cls)
    hd = lambda t: t.reshape(B, -1, heads, d).transpose(1, 2)  # noqa: E731
    qh, kh, vh, ah = hd(q), hd(k), hd(v), hd(agents)
    agent_v = torch.softmax(ah @ kh.transpose(-1, -2) * d ** -0.5 + agent_bias, dim=-1) @ vh
    out = torch.softmax(qh @ ah.transpose(-1, -2) * d ** -0.5 + query_bias, dim=-1) @ agent_v
    out = out.transpose(1, 2).reshape(B, N, C)
    dwc = m.dwc(v[:, prefix:].transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
    out = torch.cat([out[:, :prefix], out[:, prefix:] + dwc], dim=1)
    return m.proj(out)


def _perturbed(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize('fused_qkv', [True, False])
@pytest.mark.parametrize('grid', [(6, 6), (5, 7)])
def test_map_input_matches_naive(fused_qkv, grid):
    torch.manual_seed(0)
    m = _perturbed(AgentAttention(16, 2, agent_num=4, bias_grid=(6, 6), fused_qkv=fused_qkv))
    x = torch.randn(2, *grid, 16)
    out = m(x)
    assert out.shape == x.shape
    want = _naive(m, x.reshape(2, -1, 16), grid, prefix=0).reshape(2, *grid, 16)
    assert_close(out.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('grid', [(4, 4), (3, 5)])
def test_class_token_input_matches_naive(grid):
    torch.manual_seed(0)
    m = _perturbed(AgentAttention(12, 3, agent_num=4, bias_grid=(4, 4), num_prefix_tokens=1))
    x = torch.randn(2, 1 + grid[0] * grid[1], 12)
    out = m(x, grid)
    assert_close(out.double(), _naive(m, x, grid, prefix=1), atol=1e-5, rtol=1e-5)


def test_parameter_names_are_the_official_ones():
    fused = set(dict(AgentAttention(8, 2, 4, (4, 4)).named_parameters()))
    split = set(dict(AgentAttention(8, 2, 4, (4, 4), fused_qkv=False).named_parameters()))
    cls = set(dict(AgentAttention(8, 2, 4, (4, 4), num_prefix_tokens=1).named_parameters()))
    common = {'proj.weight', 'proj.bias', 'dwc.weight', 'dwc.bias', *AGENT_BIASES}
    assert fused == common | {'qkv.weight', 'qkv.bias'}
    assert split == common | {'q.weight', 'q.bias', 'kv.weight', 'kv.bias'}
    assert cls == common | {'qkv.weight', 'qkv.bias', 'ac_bias', 'ca_bias'}



def test_block_is_two_pre_norm_residuals():
    torch.manual_seed(0)
    block = _perturbed(AgentBlock(12, 3, agent_num=4, bias_grid=(4, 4), num_prefix_tokens=1, fused_qkv=False))
    assert {n.split('.')[0] for n, _ in block.named_parameters()} == {'norm1', 'attn', 'norm2', 'mlp'}
    x = torch.randn(2, 1 + 12, 12)
    y = x + block.attn(block.norm1(x), (3, 4))
    assert_close(block(x, (3, 4)), y + block.mlp(block.norm2(y)), atol=1e-6, rtol=1e-6)


def test_agent_grid_pools_to_it():
    torch.manual_seed(0)
    m = AgentAttentionBase(8, 2, agent_num=4, bias_grid=(6, 6), agent_grid=(3, 3))
    m._create_biases()
    q, k, v = torch.randn(3, 1, 36, 8).unbind(0)
    out = m.attend(q, k, v, (6, 6))
    agents = F.adaptive_avg_pool2d(q.transpose(1, 2).reshape(1, 8, 6, 6), (3, 3)).flatten(2).transpose(1, 2)
    agent_bias, query_bias = ops.agent_bias_maps(*(getattr(m, n) for n in AGENT_BIASES), (6, 6), agent_grid=(3, 3))
    split = lambda t: t.reshape(1, -1, 2, 4)  # noqa: E731
    want = ops.agent_attention(
        split(q), split(k), split(v), split(agents), agent_bias=agent_bias, query_bias=query_bias).reshape(1, 36, 8)
    assert_close(out, want, atol=1e-6, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match='perfect square, got 10'):
        AgentAttention(8, 2, agent_num=10)
    with pytest.raises(ValueError, match='dim 10 is not a multiple of num_heads 3'):
        AgentAttention(10, 3)
    with pytest.raises(ValueError, match='num_prefix_tokens must be 0 or 1'):
        AgentAttention(8, 2, agent_num=4, num_prefix_tokens=2)
    m = AgentAttention(8, 2, agent_num=4, num_prefix_tokens=1)
    with pytest.raises(ValueError, match='needs grid'):
        m(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match='10 tokens do not match grid 4x4 with 1 prefix'):
        m(torch.randn(1, 10, 8), (4, 4))


def test_resize_agent_bias():
    ah = torch.randn(1, 2, 4, 6, 1)
    assert resize_agent_bias(ah, 'ah_bias', ah.shape) is ah
    want = F.interpolate(ah.squeeze(0).squeeze(-1), size=9, mode='linear').unsqueeze(-1).unsqueeze(0)
    assert_close(resize_agent_bias(ah, 'ah_bias', (1, 2, 4, 9, 1)), want, atol=1e-6, rtol=1e-6)
    wa = torch.randn(1, 2, 1, 6, 4).half()
    out = resize_agent_bias(wa, 'wa_bias', (1, 2, 1, 3, 4))
    want = F.interpolate(wa.float()[0, :, 0].transpose(1, 2), size=3, mode='linear').transpose(1, 2)[None, :, None]
    assert_close(out, want.half(), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match=r'ah_bias of shape \(1, 2, 4, 6, 1\) cannot be resized'):
        resize_agent_bias(ah, 'ah_bias', (1, 3, 4, 9, 1))
    with pytest.raises(ValueError, match='name must be one of'):
        resize_agent_bias(ah, 'an_bias', (1, 2, 4, 9, 1))


def test_resize_pos_embed_keeps_prefix():
    pos = torch.randn(1, 1 + 16, 5)
    assert resize_pos_embed(pos, (4, 4), num_prefix_tokens=1) is pos
    out = resize_pos_embed(pos, (2, 6), num_prefix_tokens=1)
    want = F.interpolate(pos[:, 1:].reshape(1, 4, 4, 5).permute(0, 3, 1, 2), size=(2, 6), mode='bicubic')
    assert_close(out[:, :1], pos[:, :1], atol=0, rtol=0)
    assert_close(out[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 12, 5), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match='16 grid tokens do not form the 3x5 grid'):
        resize_pos_embed(pos, (4, 4), num_prefix_tokens=1, old_size=(3, 5))


def test_unwrap_checkpoint():
    sd = {'a.weight': torch.zeros(1)}
    assert unwrap_checkpoint(sd) is sd
    for key in ('model', 'state_dict', 'model_ema', 'state_dict_ema'):
        assert unwrap_checkpoint({key: sd, 'epoch': 3}) is sd
    assert list(unwrap_checkpoint({'model': {'module.a.weight': sd['a.weight']}})) == ['a.weight']


def test_parse_attn_type():
    assert parse_attn_type('AAAB', (2, 2, 6, 2)) == ['AA', 'AA', 'AAAAAA', 'BB']
    assert parse_attn_type('AAMB2', (2, 2, 3, 2)) == ['AA', 'AA', 'AAB', 'BB']
    for bad in ('AAB', 'AAXB', 'AAMB', 'AAAB2', 'AAMBx'):
        with pytest.raises(ValueError, match='attn_type'):
            parse_attn_type(bad, (2, 2, 6, 2))
