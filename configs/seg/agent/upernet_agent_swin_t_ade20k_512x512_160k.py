# UperNet + Agent-Swin-T on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py
# Official result: 46.68 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = [
    '../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
model = dict(
    backbone=dict(
        model_name='agent_swin_t',
        drop_path_rate=0.3,  # official
        out_norm=True,  # official norm{i} (LayerNorm) on every returned map
        model_kwargs=dict(
            agent_grids=((9, 9), (12, 12), (14, 14), (7, 7)),  # official downstream_agent_shapes (B-stages ignore it)
        ),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),  # official keys
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'an_bias': dict(decay_mult=0.),  # agent biases
        'na_bias': dict(decay_mult=0.),
        'ah_bias': dict(decay_mult=0.),
        'aw_bias': dict(decay_mult=0.),
        'ha_bias': dict(decay_mult=0.),
        'wa_bias': dict(decay_mult=0.),
    }))

param_scheduler = [
    # 0.x `poly` (power 1, min_lr 0) with a linear warmup over 1500 iterations from 1e-6 x lr: the poly factor over
    # the whole run times the warmup factor; mmengine's chained schedulers multiply, so both start at iteration 0
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]

train_dataloader = dict(batch_size=2)

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=61, rounding='round', source='LeapLabTHU/Agent-Attention README (ADE20K tables)')
official_backbone_params = dict(
    count=28_135_308, source='LeapLabTHU/Agent-Attention downstream/segmentation/mmseg/models/backbones/agent_swin.py')
