"""Class-weighted cross-entropy with ignored pixels: mmseg 1.2.2's ``CrossEntropyLoss(class_weight=...)`` raises on
them (``mmseg/models/losses/cross_entropy_loss.py``, ``cross_entropy``: ``class_weight[cls] for cls in label``
indexes the weights with the label 255), ``IgnoreSafeWeightedCrossEntropyLoss`` (zoo/integrations/mmseg.py) gives
the weighted mean over the scored pixels, checked against the formula written out with NumPy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mmseg.models", reason="mmsegmentation is not installed (python scripts/install_seg.py)")

from mmseg.models.losses import CrossEntropyLoss  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

from zoo.integrations.mmseg import IgnoreSafeWeightedCrossEntropyLoss  # noqa: E402

WEIGHTS = [0.1, 1.0, 2.5, 0.7]


def _batch(seed: int = 0, ignored: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    label = torch.randint(0, 4, (2, 5, 6), generator=g)
    if ignored:
        label[0, 0, :3] = 255
        label[1, 4, 5] = 255
    return logits, label


def _by_hand(logits: torch.Tensor, label: torch.Tensor, weights, pixel_weight=None, ignore_index: int = 255):
    """sum_i s_i w[y_i] (-log softmax(x_i)[y_i]) / sum_i s_i w[y_i] over the pixels with y_i != ignore_index."""
    x = logits.numpy().transpose(0, 2, 3, 1).reshape(-1, logits.shape[1])
    y = label.numpy().reshape(-1)
    s = np.ones(len(y)) if pixel_weight is None else pixel_weight.numpy().reshape(-1).astype(np.float64)
    num = den = 0.0
    for xi, yi, si in zip(x, y, s):
        if yi == ignore_index:
            continue
        log_p = xi[yi] - np.log(np.exp(xi).sum())
        num += si * weights[yi] * -log_p
        den += si * weights[yi]
    return num / den


def test_mmseg_class_weighted_loss_raises_on_ignored_pixels():
    logits, label = _batch()
    for avg_non_ignore in (False, True):
        mmseg_loss = CrossEntropyLoss(class_weight=WEIGHTS, avg_non_ignore=avg_non_ignore)
        with pytest.raises(IndexError, match="index 255 is out of bounds for dimension 0 with size 4"):
            mmseg_loss(logits, label, ignore_index=255)
    # without class weights, or without ignored pixels, mmseg's loss runs
    CrossEntropyLoss(avg_non_ignore=True)(logits, label, ignore_index=255)
    CrossEntropyLoss(class_weight=WEIGHTS, avg_non_ignore=True)(*_batch(ignored=False), ignore_index=255)


def test_weighted_mean_over_scored_pixels_by_hand():
    logits, label = _batch()
    loss = IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS)(logits, label, ignore_index=255)
    expected = _by_hand(logits, label, WEIGHTS)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # the ignored pixels' values do not matter: any class in their place, any score there, gives the same loss
    other_logits = logits.clone()
    other_logits[0, :, 0, :3] = 50.0 * torch.randn(4, 3, dtype=torch.float64)
    assert IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS)(other_logits, label, ignore_index=255).item() == \
        pytest.approx(expected, rel=1e-12)
    # loss_weight scales; without class weights it is the plain mean over the scored pixels
    assert IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS, loss_weight=0.4)(
        logits, label, ignore_index=255).item() == pytest.approx(0.4 * expected, rel=1e-12)
    plain = IgnoreSafeWeightedCrossEntropyLoss()(logits, label, ignore_index=255).item()
    assert plain == pytest.approx(_by_hand(logits, label, [1.0] * 4), rel=1e-12)
    assert abs(plain - expected) > 1e-3  # the weights change the value (the check above is not vacuous)


def test_equals_mmseg_where_mmseg_works_and_has_no_gradient_on_ignored_pixels():
    logits, label = _batch(seed=1, ignored=False)
    ours = IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS)(logits, label, ignore_index=255)
    theirs = CrossEntropyLoss(class_weight=WEIGHTS, avg_non_ignore=True)(logits, label, ignore_index=255)
    # (mmseg divides by the weight sum + float32's eps: equal to ~1e-8)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-7)

    logits, label = _batch(seed=2)
    logits.requires_grad_(True)
    IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS)(logits, label, ignore_index=255).backward()
    ignored = (label == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0) and torch.any(logits.grad[~ignored] != 0)


def test_pixel_weights_and_reductions():
    logits, label = _batch(seed=3)
    pixel_weight = torch.rand(label.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    loss = IgnoreSafeWeightedCrossEntropyLoss(class_weight=WEIGHTS)
    assert loss(logits, label, weight=pixel_weight, ignore_index=255).item() == pytest.approx(
        _by_hand(logits, label, WEIGHTS, pixel_weight), rel=1e-12)
    per_pixel = loss(logits, label, ignore_index=255, reduction_override="none")
    assert per_pixel.shape == label.shape and torch.all(per_pixel[label == 255] == 0)
    assert loss(logits, label, ignore_index=255, reduction_override="sum").item() == pytest.approx(
        per_pixel.sum().item(), rel=1e-12)
    everything_ignored = torch.full_like(label, 255)
    assert loss(logits, everything_ignored, ignore_index=255).item() == 0.0


def test_built_from_a_config_and_errors_name_the_bad_values():
    import zoo.integrations.mmseg  # noqa: F401  (registers the loss)

    built = MODELS.build(dict(type="IgnoreSafeWeightedCrossEntropyLoss", class_weight=WEIGHTS, loss_weight=0.4))
    assert isinstance(built, IgnoreSafeWeightedCrossEntropyLoss) and built.loss_name == "loss_ce"
    logits, label = _batch()
    with pytest.raises(ValueError, match="4 class weights for 3 classes"):
        built(logits[:, :3], label.clamp(max=2), ignore_index=255)
    bad = label.clone()
    bad[1, 1, 1] = 7
    with pytest.raises(ValueError, match="label value 7 is neither a class"):
        built(logits, bad, ignore_index=255)
    with pytest.raises(ValueError, match=r"class_weight=\[1.0, -1.0\]"):
        IgnoreSafeWeightedCrossEntropyLoss(class_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="loss_name='ce'"):
        IgnoreSafeWeightedCrossEntropyLoss(loss_name="ce")


def test_class_weight_corrected_segmentor_removes_the_weights_prior():
    """ClassWeightCorrectedEncoderDecoder's inference scores are EncoderDecoder's minus log(class_weight)."""
    from mmseg.utils import register_all_modules

    import zoo.integrations.mmseg  # noqa: F401

    register_all_modules()
    weights = [0.1, 1.0, 2.0]

    def segmentor(kind: str, **test_cfg):
        torch.manual_seed(0)
        return MODELS.build(dict(
            type=kind, data_preprocessor=dict(type="SegDataPreProcessor"),
            backbone=dict(type="ZooBackbone", model_name="zoo_davit_tiny", out_indices=(2, 3),
                          model_kwargs=dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64), num_heads=(1, 1, 1, 1),
                                        window_size=2)),
            decode_head=dict(type="FCNHead", in_channels=64, in_index=1, channels=8, num_convs=1, num_classes=3,
                             loss_decode=dict(type="IgnoreSafeWeightedCrossEntropyLoss", class_weight=weights)),
            test_cfg=dict(mode="whole", **test_cfg))).eval()

    x = torch.randn(1, 3, 64, 64)
    metas = [dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64))]
    with torch.no_grad():
        plain = segmentor("EncoderDecoder").encode_decode(x, metas)
        corrected = segmentor("ClassWeightCorrectedEncoderDecoder").encode_decode(x, metas)
        off = segmentor("ClassWeightCorrectedEncoderDecoder", undo_class_weight=False).encode_decode(x, metas)
    expected = plain - torch.tensor(weights).log().view(1, 3, 1, 1)
    assert torch.allclose(corrected, expected, atol=1e-6) and torch.equal(off, plain)
    assert not torch.allclose(corrected, plain)
