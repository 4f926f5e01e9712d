# Semantic FPN + EMOv2-1M on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: zhangzjn/EMOv2 downstreams/seg/configs/sem_fpn/fpn_emo2_1M-160k_ade20k-512x512.py (already mmseg 1.2.2)
# Official result: 37.1 mIoU (README).
# Batch: 8 images/GPU x 4 GPUs (official config; 4 GPUs per the released log).
_base_ = [
    '../_base_/models/fpn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
model = dict(
    backbone=dict(
        model_name='emo2_1m',
        drop_path_rate=0.04036,  # official
        out_norm=False,  # the official EMO2 seg backbone returns the stage maps without extra norms
        model_kwargs=dict(
            window_size=10,  # official seg window (classification: 7)
            dw_norm_layer='layernorm2d',  # official seg blocks: LayerNorm + GELU after the depth-wise conv
            dw_act_layer='gelu',
        ),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    neck=dict(in_channels=[32, 48, 80, 180]))

optim_wrapper = dict(
    type='OptimWrapper',
    # official (lr 1.2e-4 for 4 GPUs x 8 images)
    optimizer=dict(type='AdamW', lr=1.2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.),  # official keys
        'norm': dict(decay_mult=0.),  # official: every backbone norm is named `norm` there
        'head': dict(lr_mult=10.),  # decode head at 10x lr (official)
        # the zoo names the stem / depth-wise conv norms `bn` (timm ConvNormAct): also no decay
        'stem.0.bn': dict(decay_mult=0.),
        'stem.1.bn': dict(decay_mult=0.),
        'conv_dw.bn': dict(decay_mult=0.),
    }))

param_scheduler = [
    # official: linear warmup over 1500 iterations, constant lr, then cosine to 0 over the second half
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min=0., by_epoch=False, begin=80000, end=160000),
]

train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1, num_workers=2)
test_dataloader = val_dataloader

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
# the README truncates: the official segmentor has 5.37M
published_params = dict(
    millions=5.3, rounding='trunc', source='zhangzjn/EMOv2 README (Semantic FPN table)')
official_backbone_params = dict(
    count=1_279_484, source='zhangzjn/EMOv2 downstreams/seg/backbones/emo2.py')
