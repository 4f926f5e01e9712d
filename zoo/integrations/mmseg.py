"""mmsegmentation backbone adapter: any zoo (or timm) model with ``forward_intermediates`` as an mmseg backbone.

Importing this module registers :class:`ZooBackbone` in mmseg's ``MODELS`` registry. In a config::

    custom_imports = dict(imports=['zoo.integrations.mmseg'], allow_failed_imports=False)
    model = dict(backbone=dict(
        type='ZooBackbone',
        model_name='dinat_tiny',          # any name timm.create_model knows after `import zoo`
        out_indices=(0, 1, 2, 3),         # stages whose maps go to the decode head, strides 4/8/16/32 for pyramids
        drop_path_rate=0.3,
        frozen_stages=-1,                 # -1: none; 0: the stem; k: the stem and stages 0..k-1
        norm_eval=False,                  # keep BatchNorm layers in eval mode while training
        out_norm=True,                    # one LayerNorm per returned map, as official seg backbones add
        pad_to=0,                         # pad inputs to a multiple of this (ViT-style models that need it: 16)
        model_kwargs=dict(),              # more timm.create_model kwargs (BiFormer's n_win=8, DiNAT's dilations, ...)
        init_cfg=dict(type='Pretrained', checkpoint='PATH'),
    ))

One class serves every family: the model is built by ``timm.create_model``, cut after the last stage the decode
head needs (``prune_intermediate_layers``: classifier, final norm and unused stages go), and run through
``forward_intermediates``, so the backbone computes exactly what the classification model computes, on the same
``ops/`` kernels. ``init_cfg`` ``checkpoint`` is a zoo export folder (``model.safetensors``), a ``.safetensors``
file, or an official / timm classification checkpoint; it goes through the family's ``checkpoint_filter_fn`` (the
converter ``pretrained=True`` and ``python -m zoo.convert`` use) and is read without unpickling. Every backbone
tensor must be found in it; tensors of the parts cut away (the classifier, the final norm) are reported and
ignored.

It also registers :class:`IgnoreSafeWeightedCrossEntropyLoss` (``type='IgnoreSafeWeightedCrossEntropyLoss'``), a
class-weighted cross-entropy that accepts ignored pixels: mmseg 1.2.2's ``CrossEntropyLoss(class_weight=...)`` raises
``IndexError`` on them (see the class), and :class:`ClassWeightCorrectedEncoderDecoder`, mmseg's ``EncoderDecoder``
whose predictions take the class weights of that loss back out of the scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

try:
    from mmengine.logging import print_log
    from mmengine.model import BaseModule
    from mmseg.registry import MODELS
except ModuleNotFoundError as e:  # pragma: no cover -- depends on the environment
    raise ModuleNotFoundError(
        f"zoo.integrations.mmseg needs mmsegmentation, mmengine and mmcv (missing: {e.name}); install them with "
        "`python scripts/install_seg.py`") from e

import timm
from timm.layers import LayerNorm2d

import zoo
from zoo.convert import checkpoint_filter_for, load_state_dict_file

__all__ = ["ClassWeightCorrectedEncoderDecoder", "IgnoreSafeWeightedCrossEntropyLoss", "ZooBackbone"]


def _normalise_indices(out_indices: Sequence[int] | int, num_stages: int, model_name: str) -> list[int]:
    indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    if not indices:
        raise ValueError(f"ZooBackbone({model_name!r}): out_indices is empty; expected stage indices in "
                         f"[0, {num_stages - 1}]")
    normalised = []
    for i in indices:
        if not isinstance(i, int) or not -num_stages <= i < num_stages:
            raise ValueError(f"ZooBackbone({model_name!r}): out_indices entry {i!r} is not a stage index; the model "
                             f"has {num_stages} stages (indices 0..{num_stages - 1}, or negative from the end)")
        normalised.append(i % num_stages)
    if any(b <= a for a, b in zip(normalised, normalised[1:])):
        raise ValueError(f"ZooBackbone({model_name!r}): out_indices {tuple(indices)} must be strictly increasing")
    return normalised


class ZooBackbone(BaseModule):
    """A ``timm.create_model`` model as an mmseg backbone: ``forward`` returns the maps of ``out_indices`` (NCHW).

    Attributes ``out_channels`` and ``strides`` list the channels and strides of the returned maps (for decode
    heads' ``in_channels``).
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] | int = (0, 1, 2, 3),
            drop_path_rate: float = 0.0,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            out_norm: bool = False,
            out_norm_eps: float = 1e-5,
            with_cp: bool = False,
            pad_to: int = 0,
            model_kwargs: Optional[dict[str, Any]] = None,
            init_cfg: Optional[dict[str, Any]] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        if model_name not in timm.list_models():
            raise ValueError(f"ZooBackbone: unknown model_name {model_name!r}; zoo models: "
                             f"{', '.join(zoo.list_models())} (or any timm model with forward_intermediates)")
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs or {})
        for reserved in ("pretrained", "features_only", "drop_path_rate"):
            if reserved in self.model_kwargs:
                raise ValueError(f"ZooBackbone({model_name!r}): model_kwargs may not set {reserved!r}; use the "
                                 f"backbone's own argument (init_cfg for weights, drop_path_rate)")
        model = timm.create_model(model_name, pretrained=False, drop_path_rate=drop_path_rate, **self.model_kwargs)
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
            raise ValueError(f"ZooBackbone: {model_name!r} has no forward_intermediates / prune_intermediate_layers, "
                             "so it cannot serve as a segmentation backbone")
        info = model.feature_info
        self.out_indices = _normalise_indices(out_indices, len(info), model_name)
        self.out_channels = [info[i]["num_chs"] for i in self.out_indices]
        self.strides = [info[i]["reduction"] for i in self.out_indices]
        model.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.model = model
        if with_cp:
            self.model.set_grad_checkpointing(True)
        # LayerNorm over channels, as the official seg backbones apply it channels-last
        self.out_norms = nn.ModuleList(
            [LayerNorm2d(c, eps=out_norm_eps) for c in self.out_channels]) if out_norm else None
        self.norm_eval = norm_eval
        if not isinstance(pad_to, int) or pad_to < 0:
            raise ValueError(f"ZooBackbone({model_name!r}): pad_to must be an int >= 0 (0: no padding), got {pad_to!r}")
        self.pad_to = pad_to
        self._stage_modules = [info[i]["module"] for i in range(self.out_indices[-1] + 1)]
        self.frozen_stages = frozen_stages
        self._frozen = self._freeze(frozen_stages)

    # ------------------------------------------------------------------------------------------------ freezing
    def _freeze(self, frozen_stages: int) -> list[nn.Module]:
        """Stop gradients to the stem and the first ``frozen_stages`` stages; returns the modules kept in eval mode.

        The stem is everything registered before the first stage; a stage is every parameter up to the last one of
        its module (``feature_info[i]['module']``), which also takes the downsampling layers a family registers
        between stages. That needs parameters registered in execution order, which is checked.
        """
        num_stages = len(self._stage_modules)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"ZooBackbone({self.model_name!r}): frozen_stages must be an int in [-1, {num_stages}] "
                             f"(-1: nothing, 0: the stem, k: the stem and stages 0..k-1), got {frozen_stages!r}")
        if frozen_stages < 0:
            return []
        names = [n for n, _ in self.model.named_parameters()]
        spans = []
        for module in self._stage_modules:
            idx = [j for j, n in enumerate(names) if n.startswith(module + ".")]
            if not idx:
                raise ValueError(f"ZooBackbone({self.model_name!r}): stage module {module!r} has no parameters")
            spans.append((idx[0], idx[-1]))
        if any(b[0] <= a[1] for a, b in zip(spans, spans[1:])):
            raise ValueError(f"ZooBackbone({self.model_name!r}): its parameters are not registered stage by stage, "
                             "so frozen_stages cannot tell the stages apart; use frozen_stages=-1")
        end = spans[0][0] if frozen_stages == 0 else spans[frozen_stages - 1][1] + 1
        frozen = set(names[:end])
        for n, p in self.model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        # the largest modules whose parameters are all frozen: they are put in eval mode (dropout, drop path, norms)
        modules = []
        for name, m in self.model.named_modules():
            own = [f"{name}.{n}" if name else n for n, _ in m.named_parameters()]
            if name and own and all(n in frozen for n in own) and not any(name.startswith(p + ".") for p, _ in modules):
                modules.append((name, m))
        return [m for _, m in modules]

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for m in self._frozen:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    # --------------------------------------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """The timm model initialised itself when built; ``init_cfg`` ``Pretrained`` loads a checkpoint over it."""
        cfg = self.init_cfg
        if cfg is not None:
            if not isinstance(cfg, dict) or cfg.get("type") != "Pretrained" or "checkpoint" not in cfg:
                raise ValueError(f"ZooBackbone({self.model_name!r}): init_cfg must be "
                                 f"dict(type='Pretrained', checkpoint=PATH), got {cfg!r}")
            self.load_pretrained(cfg["checkpoint"])
        self._is_init = True

    def load_pretrained(self, checkpoint: str | Path) -> None:
        """Load classification weights (zoo export folder, .safetensors, official or timm checkpoint)."""
        path = Path(checkpoint)
        if path.is_dir():
            path = path / "model.safetensors"
        state_dict = load_state_dict_file(path)
        if self.model_name in zoo.list_models():
            # the filters may look at the full model's shapes (e.g. to resize position tables): give them one
            full = timm.create_model(self.model_name, pretrained=False, **self.model_kwargs)
            state_dict = checkpoint_filter_for(self.model_name)(state_dict, full)
        else:
            for key in ("state_dict", "model"):
                if isinstance(state_dict.get(key), dict):
                    state_dict = state_dict[key]
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state_dict))
        mismatched = sorted(f"{k} {tuple(v.shape)} (backbone: {tuple(own[k].shape)})"
                            for k, v in state_dict.items() if k in own and v.shape != own[k].shape)
        if missing or mismatched:
            raise ValueError(
                f"{str(checkpoint)!r} does not fit the {self.model_name} backbone: "
                f"{len(missing)} tensors missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
                f"{len(mismatched)} of another shape {mismatched[:4]}{' ...' if len(mismatched) > 4 else ''}")
        _, unexpected = self.model.load_state_dict(state_dict, strict=False)
        print_log(f"ZooBackbone({self.model_name}): loaded {str(checkpoint)!r}; {len(unexpected)} tensors of the parts "
                  f"cut away (classifier, final norm, unused stages) ignored" +
                  (f": {sorted(unexpected)[:6]}{' ...' if len(unexpected) > 6 else ''}" if unexpected else ""),
                  logger="current")

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pad_to > 1:  # zeros on the right / bottom, as mmseg's ViT patch embedding pads ('corner')
            h, w = x.shape[-2:]
            x = F.pad(x, (0, -w % self.pad_to, 0, -h % self.pad_to))
        feats = self.model.forward_intermediates(
            x, indices=self.out_indices, norm=False, output_fmt="NCHW", intermediates_only=True)
        if self.out_norms is not None:
            feats = [norm(f) for norm, f in zip(self.out_norms, feats)]
        return list(feats)


MODELS.register_module(name="ZooBackbone", module=ZooBackbone)


class IgnoreSafeWeightedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with per-class weights that skips ignored pixels: the weighted mean

        sum_i s_i w[y_i] CE_i / sum_i s_i w[y_i]      over the pixels i with y_i != ignore_index

    (w: `class_weight`, s: the per-pixel ``weight`` a decode head's pixel sampler passes, 1 without one), which is
    ``F.cross_entropy(weight=w, ignore_index=..., reduction='mean')`` when s = 1.

    Why not mmseg's own: in mmseg 1.2.2, ``mmseg/models/losses/cross_entropy_loss.py``, function ``cross_entropy``,
    ``CrossEntropyLoss(class_weight=...)`` computes its mean's denominator with (line 66)
    ``label_weights = torch.stack([class_weight[cls] for cls in label])``, which indexes the class weights with the
    raw labels, ignored ones included, before ``label_weights[label == ignore_index] = 0`` could mask them: any
    ignored pixel (255, e.g. ADE20K's ``reduce_zero_label`` pixels) raises
    ``IndexError: index 255 is out of bounds for dimension 0 with size C``. Here the ignored pixels are masked
    before the class weights are looked up. Config, in a decode head::

        loss_decode=dict(type='IgnoreSafeWeightedCrossEntropyLoss', class_weight=[...], loss_weight=1.0)
    """

    def __init__(self, class_weight: Optional[Sequence[float]] = None, loss_weight: float = 1.0,
                 reduction: str = "mean", loss_name: str = "loss_ce"):
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: reduction={reduction!r}, expected 'none', "
                             "'mean' or 'sum'")
        if not loss_name.startswith("loss_"):
            raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: loss_name={loss_name!r} must start with 'loss_' "
                             "(mmseg only back-propagates losses named loss_*)")
        if class_weight is not None:
            values = [float(v) for v in class_weight]
            if not values or any(not v >= 0.0 for v in values) or sum(values) <= 0.0:
                raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: class_weight={list(class_weight)!r} must be "
                                 "non-negative numbers, not all zero")
        self.class_weight = values if class_weight is not None else None  # a tensor of the scores' dtype in forward
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def extra_repr(self) -> str:
        weights = None if self.class_weight is None else [round(v, 4) for v in self.class_weight]
        return f"class_weight={weights}, loss_weight={self.loss_weight}, reduction={self.reduction!r}"

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None,
                ignore_index: int = -100, **kwargs) -> torch.Tensor:
        reduction = reduction_override or self.reduction
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: reduction_override={reduction_override!r}")
        num_classes = cls_score.shape[1]
        if self.class_weight is not None and len(self.class_weight) != num_classes:
            raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: {len(self.class_weight)} class weights for "
                             f"{num_classes} classes in the scores")
        valid = label != ignore_index
        bad = valid & ((label < 0) | (label >= num_classes))
        if bad.any():
            raise ValueError(f"IgnoreSafeWeightedCrossEntropyLoss: label value {int(label[bad][0])} is neither a class "
                             f"(0..{num_classes - 1}) nor ignore_index={ignore_index}")
        safe = torch.where(valid, label, torch.zeros_like(label))  # ignored pixels: any class, weighted 0 below
        loss = F.cross_entropy(cls_score, safe, reduction="none")
        pixel_weight = valid.to(loss.dtype)
        if self.class_weight is not None:
            pixel_weight = pixel_weight * loss.new_tensor(self.class_weight)[safe]
        if weight is not None:
            pixel_weight = pixel_weight * weight.to(loss.dtype)
        loss = loss * pixel_weight
        if reduction == "sum":
            loss = loss.sum()
        elif reduction == "mean":
            denominator = pixel_weight.sum() if avg_factor is None else avg_factor
            # every pixel ignored: zero, with a gradient path, as F.cross_entropy's NaN is of no use to training
            loss = loss.sum() / denominator if float(denominator) > 0 else loss.sum() * 0.0
        return self.loss_weight * loss


MODELS.register_module(name="IgnoreSafeWeightedCrossEntropyLoss", module=IgnoreSafeWeightedCrossEntropyLoss)


from mmseg.models.segmentors import EncoderDecoder  # noqa: E402


class ClassWeightCorrectedEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` whose inference removes the prior that class-weighted training put in the scores.

    Cross-entropy with class weights w is minimised by softmax scores proportional to ``w_c p(c | x)``, not
    ``p(c | x)``: a background weight of 0.1 makes every pixel ten times less likely to be called background than
    the model believes it is. That is what the weights are for while the model learns (early on, a digit pixel's
    probability is split over ten digits and background would win every argmax), but once it has learnt, the
    argmax of the weighted scores over-predicts the up-weighted classes. Here ``-log w_c`` is added to the scores
    of class c at inference (``encode_decode``, used by whole and sliding-window inference; training is
    unchanged), with w the decode head's loss ``class_weight``, so the argmax is that of ``p(c | x)`` (logit
    adjustment). Same weights and checkpoints as ``EncoderDecoder``. ``test_cfg=dict(undo_class_weight=False)``
    turns it off.
    """

    def _class_log_weights(self) -> Optional[torch.Tensor]:
        if not self.test_cfg.get("undo_class_weight", True):
            return None
        losses = self.decode_head.loss_decode
        losses = losses if isinstance(losses, nn.ModuleList) else [losses]
        weights = [getattr(loss, "class_weight", None) for loss in losses]
        weights = [w for w in weights if w is not None]
        if not weights:
            return None
        if any(list(map(float, w)) != list(map(float, weights[0])) for w in weights[1:]):
            raise ValueError(f"ClassWeightCorrectedEncoderDecoder: the decode head's losses have different class "
                             f"weights {weights}; the prior to remove is ambiguous")
        w = torch.as_tensor([float(v) for v in weights[0]])
        if not bool((w > 0).all()):
            raise ValueError(f"ClassWeightCorrectedEncoderDecoder: class_weight {weights[0]} has a zero; its class "
                             "could never be predicted back (use undo_class_weight=False)")
        return w.log()

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        seg_logits = super().encode_decode(inputs, batch_img_metas)
        log_w = self._class_log_weights()
        if log_w is None:
            return seg_logits
        if log_w.numel() != seg_logits.shape[1]:
            raise ValueError(f"ClassWeightCorrectedEncoderDecoder: {log_w.numel()} class weights for "
                             f"{seg_logits.shape[1]} classes in the scores")
        return seg_logits - log_w.to(seg_logits).view(1, -1, 1, 1)


MODELS.register_module(name="ClassWeightCorrectedEncoderDecoder", module=ClassWeightCorrectedEncoderDecoder)
