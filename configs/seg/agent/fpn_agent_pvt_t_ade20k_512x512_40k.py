# Semantic FPN + Agent-PVT-T on ADE20K: 512x512 crops, 40k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_pvt/fpn_agent_pvt_t_12-16-28-28.py
# Official result: 40.18 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = [
    '../_base_/models/fpn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40k.py'
]
model = dict(
    backbone=dict(
        model_name='agent_pvt_t',
        drop_path_rate=0.1,  # official
        out_norm=False,  # the official Agent-PVT seg backbone returns the stage maps without extra norms
        model_kwargs=dict(
            agent_grids=((12, 12), (16, 16), (28, 28), (28, 28)),  # official downstream_agent_shapes
        ),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    type='OptimWrapper',
    # official: AdamW lr 2e-4, weight decay 1e-4 on every parameter (no paramwise_cfg)
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))

param_scheduler = [
    # 0.x `poly`: power 0.9, min_lr 0.0, no warmup
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=40000),
]

train_dataloader = dict(batch_size=2)

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=15, rounding='round', source='LeapLabTHU/Agent-Attention README (ADE20K tables)')
official_backbone_params = dict(
    count=11_057_352, source='LeapLabTHU/Agent-Attention downstream/segmentation/mmseg/models/backbones/agent_pvt.py')
