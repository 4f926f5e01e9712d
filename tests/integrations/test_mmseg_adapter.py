"""zoo.integrations.mmseg: every classification family as an mmseg backbone, and segmentors on it at real sizes.

Default tier: each family's smallest model (by parameter count) as a backbone -- outputs equal the classification
model's ``forward_intermediates``, frozen stages stop gradients exactly where they should, weights load from a zoo
export and from an official-layout checkpoint -- and an UperNet segmentor (narrow head) in whole-image and
sliding-window inference at 512x683. ``-m slow``: the same at 512x512 and 2048x1024.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg.models", reason="mmsegmentation is not installed (python scripts/install_seg.py)")

import timm  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from timm.models import model_entrypoint  # noqa: E402

import zoo  # noqa: E402
from zoo.integrations.mmseg import ZooBackbone  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules()  # mmseg's default scope, so nested types (SegDataPreProcessor, UPerHead) resolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from param_counts import PARAM_COUNTS  # noqa: E402


def _smallest_per_family() -> list[str]:
    best: dict[str, str] = {}
    for name in zoo.list_models():
        if not timm.models.get_pretrained_cfg(name).num_classes:  # HAT: super-resolution, no feature pyramid
            continue
        family = model_entrypoint(name).__module__
        if family not in best or PARAM_COUNTS[name] < PARAM_COUNTS[best[family]]:
            best[family] = name
    return sorted(best.values())


# one per family file, and both NAT and DiNAT (plain and dilated neighbourhoods share a file and a size)
BACKBONES = sorted(set(_smallest_per_family()) | {"nat_mini", "dinat_mini"})
# settings the official seg configs use with these families, where the classification default differs
MODEL_KWARGS = {"biformer_tiny": dict(n_win=8)}
# plain ViTs take multiples of their patch only: the backbone pads the input (mmseg's ViT does the same)
PAD_TO = {"agent_deit_t": 16}


def _backbone(name: str, **kwargs) -> ZooBackbone:
    torch.manual_seed(0)
    kwargs.setdefault("model_kwargs", MODEL_KWARGS.get(name, {}))
    return ZooBackbone(name, **kwargs).eval()


def _size_for(backbone: ZooBackbone, target: int = 64) -> tuple[int, int]:
    s = max(backbone.strides)
    return (max(s, target // s * s),) * 2


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_computes_the_classification_intermediates(name):
    """The pruned model's maps equal the full classification model's; out_norm is a LayerNorm over channels."""
    bb = _backbone(name, out_norm=True)
    full = timm.create_model(name, **MODEL_KWARGS.get(name, {})).eval()
    full.load_state_dict({**full.state_dict(), **bb.model.state_dict()})  # same weights; head / final norm unused
    x = torch.randn(1, 3, *_size_for(bb))
    with torch.no_grad():
        ref = full.forward_intermediates(x, indices=bb.out_indices, intermediates_only=True)
        raw = bb.model.forward_intermediates(x, indices=bb.out_indices, intermediates_only=True)
        ours = bb(x)
    assert len(ours) == len(bb.out_indices) == len(bb.out_channels)
    for o, w, r, c, s, norm in zip(ours, raw, ref, bb.out_channels, bb.strides, bb.out_norms):
        assert o.shape == (1, c, math.ceil(x.shape[2] / s), math.ceil(x.shape[3] / s))
        torch.testing.assert_close(w, r, rtol=0, atol=0)
        expected = torch.nn.functional.layer_norm(r.permute(0, 2, 3, 1), (c,), norm.weight, norm.bias, 1e-5)
        torch.testing.assert_close(o, expected.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in bb.out_norms.parameters()) == 2 * sum(bb.out_channels)
    # no classifier left in the backbone
    head = bb.model.get_classifier()
    assert head is None or not any(p.numel() for p in head.parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_frozen_stages_stop_gradients_there(name):
    k = 2  # every family has at least four stages (DeiT: blocks)
    bb = _backbone(name, frozen_stages=k).train()
    trainable = [p for p in bb.parameters() if p.requires_grad]
    assert trainable and any(not p.requires_grad for p in bb.parameters())
    feats = bb(torch.randn(1, 3, *_size_for(bb)))
    # the map of the last frozen stage depends on no trainable parameter (autograd recorded nothing) ...
    assert not feats[k - 1].requires_grad
    # ... the next one does
    grads = torch.autograd.grad(feats[k].sum(), trainable, allow_unused=True)
    assert any(g is not None and g.any() for g in grads)
    # frozen modules stay in eval mode while the rest trains
    assert bb._frozen and all(not m.training for m in bb._frozen) and bb.training


def test_frozen_stages_zero_freezes_the_stem_only():
    bb = _backbone("zoo_davit_tiny", frozen_stages=0).train()
    frozen = [n for n, p in bb.model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("stem.") for n in frozen)
    feats = bb(torch.randn(1, 3, 64, 64))
    assert feats[0].requires_grad


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model_name 'no_such_net'"):
        ZooBackbone("no_such_net")
    with pytest.raises(ValueError, match="out_indices entry 7"):
        ZooBackbone("emo2_1m", out_indices=(0, 7))
    with pytest.raises(ValueError, match="strictly increasing"):
        ZooBackbone("emo2_1m", out_indices=(2, 1))
    with pytest.raises(ValueError, match="frozen_stages must be an int in \\[-1, 4\\]"):
        ZooBackbone("emo2_1m", frozen_stages=5)
    with pytest.raises(ValueError, match="model_kwargs may not set 'pretrained'"):
        ZooBackbone("emo2_1m", model_kwargs=dict(pretrained=True))
    with pytest.raises(ValueError, match="init_cfg must be"):
        ZooBackbone("emo2_1m", init_cfg=dict(type="Kaiming")).init_weights()


def test_pretrained_from_zoo_export_and_official_layout(tmp_path):
    from zoo.engine.export import export_model

    name = "emo2_1m"
    torch.manual_seed(1)
    cls_model = timm.create_model(name).eval()
    export_dir = export_model(cls_model, tmp_path / "export", model_args={}, data_config={})
    bb = _backbone(name, out_norm=True, init_cfg=dict(type="Pretrained", checkpoint=str(export_dir)))
    bb.init_weights()
    assert bb.is_init
    ref = cls_model.state_dict()
    for k, v in bb.model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0)

    # a checkpoint of another model is refused, naming what it lacks
    other = _backbone("zoo_davit_tiny", init_cfg=dict(type="Pretrained", checkpoint=str(export_dir)))
    with pytest.raises(ValueError, match="does not fit the zoo_davit_tiny backbone: .* tensors missing"):
        other.init_weights()


def test_pretrained_from_official_checkpoint(tmp_path):
    """An official-layout checkpoint goes through the family's checkpoint_filter_fn, as the converter does."""
    from test_davit import _official_tiny_state_dict
    from zoo.convert import checkpoint_filter_for

    official = _official_tiny_state_dict()
    torch.save({"model": official}, tmp_path / "davit_tiny.pth")
    bb = _backbone("zoo_davit_tiny", out_norm=True,
                   init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "davit_tiny.pth")))
    bb.init_weights()
    cls_model = timm.create_model("zoo_davit_tiny")
    cls_model.load_state_dict(checkpoint_filter_for("zoo_davit_tiny")(official, cls_model))
    ref = cls_model.state_dict()
    for k, v in bb.model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# Segmentors: UperNet on each family, whole-image and sliding-window inference at ADE20K / Cityscapes sizes

def _four_indices(num_stages: int) -> tuple[int, ...]:
    """Four maps for the decode head: the four stages of a pyramid, the last block of each quarter of a plain ViT."""
    return tuple(range(4)) if num_stages == 4 else tuple(round((i + 1) * num_stages / 4) - 1 for i in range(4))


def _segmentor(name: str, mode: str, num_classes: int = 19):
    """An UperNet as the paper configs build it, with a narrow head (16 channels) so the CPU tier stays quick."""
    with torch.device("meta"):  # stage count and channels without building twice for real
        num_stages = len(timm.create_model(name, **MODEL_KWARGS.get(name, {})).feature_info)
        out_indices = _four_indices(num_stages)
        backbone = dict(type="ZooBackbone", model_name=name, out_indices=out_indices, out_norm=True,
                        pad_to=PAD_TO.get(name, 0), model_kwargs=MODEL_KWARGS.get(name, {}))
        in_channels = MODELS.build(dict(backbone)).out_channels
    test_cfg = dict(mode="whole") if mode == "whole" else dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    cfg = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
        backbone=backbone,
        decode_head=dict(type="UPerHead", in_channels=in_channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=16, dropout_ratio=0.1, num_classes=num_classes, align_corners=False,
                         norm_cfg=dict(type="BN", requires_grad=True),
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(), test_cfg=test_cfg)
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg))  # attribute access to nested settings (test_cfg.mode), as from a file
    model.init_weights()
    return model.eval()


def _infer(model, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        return model.inference(x, [meta])


def _check_whole_and_slide(name: str, size: tuple[int, int], slide: bool = True) -> None:
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    whole = _segmentor(name, "whole")
    logits = _infer(whole, x)
    assert logits.shape == (1, 19, *size) and torch.isfinite(logits).all()
    if not slide:
        return
    slide = _segmentor(name, "slide")  # same seed: the same weights
    slide.load_state_dict(whole.state_dict())
    slid = _infer(slide, x)
    assert slid.shape == (1, 19, *size) and torch.isfinite(slid).all()
    h, w = size
    if (h, w) == (512, 512):  # one window: sliding equals whole
        torch.testing.assert_close(slid, logits, rtol=0, atol=0)
    else:  # the top-left corner is seen by the first window alone (stride 341, windows 512)
        with torch.no_grad():
            first = whole.encode_decode(x[..., :512, :512], [dict(img_shape=(512, 512))])
        ch = 512 if h <= 512 else min(341, h - 512)
        cw = 512 if w <= 512 else min(341, w - 512)
        torch.testing.assert_close(slid[..., :ch, :cw], first[..., :ch, :cw], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
def test_upernet_whole_512x683(name):
    """Every family segments a 512x683 image (ADE20K's usual test size, a multiple of no window) in one pass."""
    _check_whole_and_slide(name, (512, 683), slide=False)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(512, 512), (512, 683), (1024, 2048)], ids=["512x512", "512x683", "2048x1024"])
@pytest.mark.parametrize("name", BACKBONES)
def test_upernet_whole_and_slide_sizes(name, size):
    _check_whole_and_slide(name, size)


def test_pad_to_pads_right_and_bottom():
    bb = _backbone("agent_deit_t", pad_to=16, out_indices=(11,))
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        ours = bb(x)[0]
        ref = bb.model.forward_intermediates(torch.nn.functional.pad(x, (0, 8, 0, 8)), indices=[11],
                                             intermediates_only=True)[0]
    assert ours.shape[-2:] == (3, 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pad_to must be an int >= 0"):
        ZooBackbone("agent_deit_t", pad_to=-1)
