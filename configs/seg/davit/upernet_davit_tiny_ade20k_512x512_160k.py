# UperNet + DaViT-T on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: dingmyu/davit mmseg/configs/upernet_davit_512x512_160k_ade20k.py (tiny; small / base follow it with their
#   own widths, as the README reports them)
# Official result: 46.3 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = [
    '../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
model = dict(
    backbone=dict(
        model_name='zoo_davit_tiny',
        drop_path_rate=0.3,  # official
        out_norm=True,  # official norm{i} (LayerNorm) on every returned map
        model_kwargs=dict(),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(
    type='OptimWrapper',
    # official: AdamW on every parameter; its paramwise_cfg (no decay on norms) is commented out
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))

param_scheduler = [
    # 0.x `poly` (power 1, min_lr 0) with a linear warmup over 1500 iterations from 1e-6 x lr: the poly factor over
    # the whole run times the warmup factor; mmengine's chained schedulers multiply, so both start at iteration 0
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]

train_dataloader = dict(batch_size=2)

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=60, rounding='round', source='dingmyu/davit README')
official_backbone_params = dict(
    count=27_592_512, source='dingmyu/davit mmseg/mmseg/models/backbones/davit.py')
