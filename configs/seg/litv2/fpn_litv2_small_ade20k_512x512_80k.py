# Semantic FPN + LITv2-S on ADE20K: 512x512 crops, 80k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: ziplab/LITv2 segmentation/configs/litv2/litv2_s_fpn_r50_512x512_80k_ade20k.py
# Official result: 44.3 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official config + README).
_base_ = [
    '../_base_/models/fpn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
model = dict(
    backbone=dict(
        model_name='litv2_small',
        drop_path_rate=0.2,  # official
        out_norm=True,  # official norm{i} (LayerNorm) on every returned map
        model_kwargs=dict(),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    type='OptimWrapper',
    # official: AdamW lr 1e-4, weight decay 1e-4 on every parameter, no gradient clipping
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

param_scheduler = [
    # 0.x `poly`: power 0.9, min_lr 1e-06, no warmup
    dict(type='PolyLR', power=0.9, eta_min=1e-06, by_epoch=False, begin=0, end=80000),
]

train_dataloader = dict(batch_size=2)

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=31, rounding='round', source='ziplab/LITv2 segmentation/README.md')
