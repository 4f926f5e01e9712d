"""The staged backbone every hierarchical family inherits, and the helpers their files share.

A hierarchical zoo model is ``stem -> stages[0] -> ... -> stages[-1] -> final norm -> head``. What differs between
families is configured by class attributes (names of the sub-modules, where the final norm sits), so inheriting
changes no state-dict key and no output; everything timm's API asks of such a model lives here once:
``forward_features`` / ``forward_head`` / ``forward``, ``forward_intermediates``, ``prune_intermediate_layers``,
``set_grad_checkpointing``, ``get_classifier`` / ``reset_classifier``, ``group_matcher``, ``no_weight_decay``, and
the input check (4-D, ``in_chans`` channels, at least the total stride on each side).

FX: the control-flow helpers here (input check, padding) are registered with timm's ``register_notrace_function``,
and so are the ``ops`` primitives (:func:`register_ops_notrace`), so that ``torch.fx`` symbolic tracing (timm's FX
feature extraction, torchvision's ``create_feature_extractor``) records them as calls instead of tracing into their
shape checks. Model files call the primitives by their global name (``from ops import window_attention``), which
is what FX's autowrap patches. TorchScript is not supported.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_function, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices

import ops
from zoo.errors import InputError, ModelInputError
from zoo.weights import create

__all__ = [
    'ChannelsLastStage', 'StagedBackbone', 'architecture_name', 'build_backbone', 'check_image_input', 'check_int_arg',
    'family_builder', 'feature_take_indices', 'forward_blocks', 'imagenet_cfg', 'init_linear_trunc_normal',
    'pad_to_multiple', 'paper_cfg', 'prune_isotropic', 'register_ops_notrace', 'rename_keys', 'unwrap_checkpoint',
]


def register_ops_notrace() -> None:
    """Make every public ``ops`` primitive an FX leaf (called, not traced into)."""
    for name in ops.__all__:
        fn = getattr(ops, name)
        if callable(fn) and not isinstance(fn, type):
            register_notrace_function(fn)


register_ops_notrace()


@register_notrace_function
def check_image_input(x: torch.Tensor, in_chans: int, min_size: int, model_name: str) -> torch.Tensor:
    """`x` itself if it is a non-empty floating-point ``(B, in_chans, H, W)`` batch with ``H, W >= min_size``; a
    :class:`~zoo.errors.ModelInputError` (a ValueError) naming the shape or dtype and what was expected otherwise.

    Every zoo model calls this once per forward: the one input contract of the zoo."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ModelInputError(
            f'{model_name}: expected an image batch of shape (B, {in_chans}, H, W), got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ModelInputError(
            f'{model_name}: expected a floating-point image batch (float32 / float16 / bfloat16, normalised), got '
            f'{x.dtype}; convert uint8 images with the model\'s data config (timm.data.create_transform)')
    if x.shape[0] == 0:
        raise ModelInputError(f'{model_name}: the batch is empty (shape {tuple(x.shape)}); expected at least one image')
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ModelInputError(
            f'{model_name}: input {x.shape[2]}x{x.shape[3]} is smaller than the total stride; each side must be '
            f'at least {min_size}')
    return x


def check_int_arg(
        owner: str,
        name: str,
        value: Any,
        *,
        lengths: Sequence[int] = (),
        scalar: bool = True,
        minimum: Optional[int] = 1,
) -> None:
    """An architecture argument that must be ints: an int (when `scalar`) or a tuple / list of ints with one of
    `lengths` entries (none allowed when `lengths` is empty), each at least `minimum`. A
    :class:`~zoo.errors.InputError` (a ValueError) naming `owner`, the argument and its value otherwise.

    Constructors call it before using the value, so a bad window or kernel size fails when the model is built, with
    its name, instead of as a ``%`` TypeError or a division by zero at the first forward."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)

    if scalar and ok(value):
        return
    if lengths and isinstance(value, (tuple, list)) and len(value) in lengths and all(ok(v) for v in value):
        return
    kind = 'int' if minimum is None else 'positive int' if minimum == 1 else f'int >= {minimum}'
    forms = ([f'a {kind}'] if scalar else []) + [f'a tuple of {n} {kind}s' for n in lengths]
    raise InputError(f'{owner}: {name} must be {" or ".join(forms)}, got {value!r}')


@register_notrace_function
def pad_to_multiple(
        x: torch.Tensor,
        multiple: Union[int, Tuple[int, int]],
        channels_last: bool = False,
        mode: str = 'constant',
) -> torch.Tensor:
    """Pad the spatial dims of an NCHW (or, with `channels_last`, NHWC) map at the bottom / right to multiples of
    `multiple`: zeros, or mirrored pixels with ``mode='reflect'`` (NCHW; HAT's test-time padding, which needs each
    pad smaller than its side); `x` itself when they already are multiples."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    H, W = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    pad_b, pad_r = (mh - H % mh) % mh, (mw - W % mw) % mw
    if not (pad_b or pad_r):
        return x
    if mode == 'reflect' and (channels_last or pad_b >= H or pad_r >= W):
        raise InputError(f'a {H}x{W} input cannot be reflect-padded to a multiple of {multiple}: the pads {pad_b}, '
                         f'{pad_r} must be smaller than the sides{" (and the map NCHW)" if channels_last else ""}')
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b) if channels_last else (0, pad_r, 0, pad_b), mode=mode)


_CONTAINERS = ('state_dict', 'model', 'model_ema', 'state_dict_ema')


def architecture_name(model: nn.Module) -> str:
    """The name a model's errors go by: its registered architecture (``pretrained_cfg['architecture']``, set by timm's
    builder), else its class name."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return cfg.get('architecture', type(model).__name__)


def unwrap_checkpoint(state_dict: Dict[str, Any], containers: Sequence[str] = _CONTAINERS) -> Dict[str, Any]:
    """The state dict inside a training-checkpoint container (the first of `containers` present: ``{'model': ...}``,
    ``state_dict_ema`` of EMA runs, ...), without a DDP ``module.`` prefix."""
    for key in containers:
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def rename_keys(
        state_dict: Dict[str, Any],
        rules: Iterable[Tuple[str, Union[str, Callable[[re.Match], str]]]],
) -> Dict[str, Any]:
    """Apply every ``(pattern, replacement)`` rule, in order, to every key (``re.sub`` semantics)."""
    rules = tuple(rules)
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def build_backbone(
        model_cls: type,
        variant: str,
        pretrained: bool = False,
        *,
        filter_fn: Optional[Callable] = None,
        num_stages: Optional[int] = None,
        model_args: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
) -> nn.Module:
    """``build_model_with_cfg`` with the zoo's defaults: every stage a feature level (``features_only`` takes
    ``stages.i``, or whatever ``feature_info`` names), the family's checkpoint filter for pretrained weights.

    `model_args`: the variant's architecture (its row of the family's variant table); `kwargs` override it.
    `num_stages` defaults to one per entry of the ``depths`` kwarg (4 without one)."""
    kwargs = dict(model_args or {}, **kwargs)
    if num_stages is None:
        num_stages = len(kwargs['depths']) if 'depths' in kwargs else 4
    out_indices = kwargs.pop('out_indices', tuple(range(num_stages)))
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def imagenet_cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    """A pretrained cfg with the usual ImageNet-1k classifier values (224x224 input and a 7x7 final map, crop 0.875,
    bicubic, ImageNet mean / std, ``stem.conv``, ``head.fc``); `kwargs` add the family's fields (license, paper) and
    replace what differs."""
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc',
        **kwargs,
    }


def paper_cfg(
        paper_ids: str, paper_name: str, origin_url: str, *, license: str, **fields: Any,
) -> Callable[..., Dict[str, Any]]:
    """A family's ``_cfg(url='', **kwargs)``: :func:`imagenet_cfg` with the paper's fields (arXiv id, title, official
    repository, the code's license) and the family's own `fields` (``first_conv``, ``crop_pct``, ...); a call's
    kwargs replace any of them."""
    return functools.partial(imagenet_cfg, license=license, paper_ids=paper_ids, paper_name=paper_name,
                             origin_url=origin_url, **fields)


def family_builder(
        model_cls: type,
        variant_args: Dict[str, Dict[str, Any]],
        *,
        filter_fn: Optional[Callable] = None,
        **build_kwargs: Any,
) -> Callable[..., nn.Module]:
    """A family's ``_create_<family>(variant, pretrained=False, **kwargs)``: :func:`build_backbone` of `model_cls`
    with the variant's row of `variant_args` (the caller's kwargs override it) and the family's checkpoint filter,
    through :func:`zoo.weights.create` (the tag's model args; with `pretrained`, its official file read safely)."""

    def create_variant(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create(lambda pretrained, **kwargs: build_backbone(
            model_cls, variant, pretrained, filter_fn=filter_fn, model_args=variant_args[variant], **build_kwargs,
            **kwargs), variant, pretrained, kwargs)

    return create_variant


def init_linear_trunc_normal(module: nn.Module) -> None:
    """The init most official repositories apply with ``model.apply``: truncated-normal (std .02) Linear weights,
    zero Linear biases; every other module keeps PyTorch's default init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def forward_blocks(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A stage's ``blocks`` (an ``nn.Sequential``) on `x`, through timm's ``checkpoint_seq`` while the stage's
    ``grad_checkpointing`` is on (`StagedBackbone.set_grad_checkpointing` sets it on every stage)."""
    if stage.grad_checkpointing and not torch.jit.is_scripting():
        return checkpoint_seq(stage.blocks, x)
    return stage.blocks(x)


def prune_isotropic(
        model: nn.Module,
        blocks_name: str,
        indices: Union[int, List[int]],
        prune_norm: bool,
        prune_head: bool,
) -> List[int]:
    """``prune_intermediate_layers`` of an isotropic model (a ViT-like ``nn.Sequential`` of blocks at one width, in
    attribute `blocks_name`): drop the blocks after the last one selected; the final ``norm`` fits every block's
    output, so it goes only with `prune_norm`; the head goes with `prune_head` (``reset_classifier(0, '')``)."""
    blocks = getattr(model, blocks_name)
    take_indices, max_index = feature_take_indices(len(blocks), indices)
    setattr(model, blocks_name, blocks[:max_index + 1])
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.reset_classifier(0, '')
    return take_indices


class ChannelsLastStage(nn.Module):
    """A stage that takes and returns NCHW maps and runs its blocks on channels-last ``(B, H, W, C)`` maps.

    ``downsample`` (None: the stage keeps the resolution) takes and returns NCHW maps, or NHWC ones with
    `downsample_channels_last`; with `contiguous` its output is copied once to contiguous channels-last, so that
    norms, projections and the ops read dense rows (a family without that copy keeps its float rounding by leaving
    it off); the ``blocks`` run in order, each recomputed in backward when ``grad_checkpointing`` is set. The caller
    builds the modules, so their parameters are created (and initialised) in its order.
    """

    def __init__(
            self,
            downsample: Optional[nn.Module],
            blocks: Iterable[nn.Module],
            downsample_channels_last: bool = False,
            contiguous: bool = True,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample_channels_last = downsample_channels_last
        self.contiguous = contiguous
        self.downsample = nn.Identity() if downsample is None else downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        if self.downsample_channels_last:
            x = self.downsample(x.permute(0, 2, 3, 1))
        else:
            x = self.downsample(x).permute(0, 2, 3, 1)
        if self.contiguous:
            x = x.contiguous()
        return forward_blocks(self, x).permute(0, 3, 1, 2)


class StagedBackbone(nn.Module):
    """``stem -> stages -> final norm -> head`` with timm's API, configured by class attributes.

    A subclass builds, in ``__init__``: ``self.in_chans``, ``self.num_classes``, ``self.num_features``,
    ``self.head_hidden_size``, ``self.grad_checkpointing`` (:meth:`init_backbone` sets them), ``self.feature_info``
    (one entry per stage, :meth:`add_stage_feature`), the stem
    (attribute `stem_name`, or none), an ``nn.Sequential`` of stages (attribute `stages_name`), optionally a final
    norm (attribute ``norm``) and a head with ``.fc`` and ``.reset(num_classes, pool_type)`` (timm's
    ``ClassifierHead`` and the like), ``head(x, pre_logits=...)``. Override what a family does differently.
    """

    stem_name: Optional[str] = 'stem'  # the stem module's attribute; None: the first stage embeds the image
    stages_name: str = 'stages'
    # The module(s) each stage starts with, a regex (its downsample; e.g. PVT's ``(patch_embed|pos_embed)``).
    downsample_name: str = 'downsample'
    # The final norm (attribute ``norm``, if any) is a LayerNorm over channels applied to an NCHW map by permuting.
    norm_channels_last: bool = False
    # Gradient checkpointing: each stage checkpoints its own blocks (stages have a ``grad_checkpointing`` flag);
    # False: the model checkpoints whole stages with timm's ``checkpoint_seq``.
    checkpoint_per_stage: bool = True
    # Parameters exempt from weight decay, by name suffix (position tables, layer-scale gammas, ...).
    no_weight_decay_suffixes: Tuple[str, ...] = ()

    in_chans: int
    num_classes: int
    num_features: int
    head_hidden_size: int
    grad_checkpointing: bool
    feature_info: List[Dict[str, Any]]

    # --- construction ----------------------------------------------------------------------------------------

    def init_backbone(
            self,
            in_chans: int,
            num_classes: int,
            num_features: int,
            drop_rate: float = 0.,
            head_hidden_size: Optional[int] = None,
    ) -> None:
        """Set what timm's API reads (``in_chans``, ``num_classes``, ``num_features``, ``head_hidden_size`` -- the
        pre-logits width, `num_features` unless the head projects --, ``drop_rate``, ``grad_checkpointing`` off) and
        start ``feature_info``, which :meth:`add_stage_feature` fills as the stages are built."""
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = num_features
        self.head_hidden_size = num_features if head_hidden_size is None else head_hidden_size
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info = []

    def add_stage_feature(self, num_chs: int, reduction: int) -> None:
        """Record the next stage (``{stages_name}.{i}``) as a feature level of `num_chs` channels at stride
        `reduction`."""
        module = f'{self.stages_name}.{len(self.feature_info)}'
        self.feature_info.append(dict(num_chs=num_chs, reduction=reduction, module=module))

    # --- structure -------------------------------------------------------------------------------------------

    @property
    def _stages(self) -> nn.Sequential:
        return getattr(self, self.stages_name)

    @property
    def model_name(self) -> str:
        return architecture_name(self)

    @property
    def min_input_size(self) -> int:
        """The smallest input side the model takes: its total stride."""
        return self.feature_info[-1]['reduction']

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stem_name is None else getattr(self, self.stem_name)(x)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, 'norm', None)
        if norm is None:
            return x
        if self.norm_channels_last:
            return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return norm(x)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        return check_image_input(x, self.in_chans, self.min_input_size, self.model_name)

    # --- timm API --------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        stages, down = re.escape(self.stages_name), self.downsample_name
        blocks = [(rf'^{stages}\.(\d+)\.{down}', (0,)), (rf'^{stages}\.(\d+)\.blocks\.(\d+)', None)]
        if getattr(self, 'norm', None) is not None:
            blocks.append((r'^norm', (99999,)))
        return dict(
            stem=rf'^{re.escape(self.stem_name)}' if self.stem_name else rf'^{stages}\.0\.{down}',
            blocks=rf'^{stages}\.(\d+)' if coarse else blocks,
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # norms and biases are 1-D, which timm's optimizer factory already exempts
        if not self.no_weight_decay_suffixes:
            return set()
        return {n for n, _ in self.named_parameters() if n.endswith(self.no_weight_decay_suffixes)}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        if self.checkpoint_per_stage:
            for stage in self._stages:
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def _reset_head_for_pruning(self) -> None:
        """The head after pruning: no classifier, no pooling (a head sized for a pruned stage must not remain)."""
        self.reset_classifier(0, '')

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features and return the maps of the stages selected by `indices`.

        Args:
            x: Input images, NCHW.
            indices: Take the last n stages if an int, all if None, the listed ones if a sequence.
            norm: Apply the final norm (if the model has one) to the last stage's map when it is taken; the maps
                are un-normed otherwise, as the official segmentation backbones take them.
            stop_early: Stop after the last stage that is needed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{self.model_name}.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        x = self.check_input(x)
        intermediates = []
        all_stages = self._stages
        take_indices, max_index = feature_take_indices(len(all_stages), indices)
        stages = all_stages if torch.jit.is_scripting() or not stop_early else all_stages[:max_index + 1]
        last = len(all_stages) - 1

        x = self.forward_stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.final_norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(all_stages):
            x = self.final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and the final norm / head) that the selected intermediates do not need."""
        all_stages = self._stages
        take_indices, max_index = feature_take_indices(len(all_stages), indices)
        prune_end = max_index < len(all_stages) - 1
        setattr(self, self.stages_name, all_stages[:max_index + 1])
        if (prune_norm or prune_end) and getattr(self, 'norm', None) is not None:
            self.norm = nn.Identity()  # sized for the last stage
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self._reset_head_for_pruning()
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(self.check_input(x))
        if self.grad_checkpointing and not self.checkpoint_per_stage and not torch.jit.is_scripting():
            x = checkpoint_seq(self._stages, x, flatten=False)
        else:
            x = self._stages(x)
        return self.final_norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
