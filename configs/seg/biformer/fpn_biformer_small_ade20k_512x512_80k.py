# Semantic FPN + BiFormer-S on ADE20K: 512x512 crops, 80k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: rayleizhu/BiFormer semantic_segmentation/configs/ade20k/sfpn.biformer_small.py
# Official result: 48.9 mIoU (README).
# Batch: 4 images/GPU x 8 GPUs (official: UniFormer's 4 GPUs doubled).
# The official training set is RepeatDataset(times=50); with an iteration-based loop and an infinite
# sampler that changes nothing here.
_base_ = [
    '../_base_/models/fpn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
model = dict(
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.15,  # official
        out_norm=True,  # official extra_norms: timm LayerNorm2d (eps 1e-6) per map; the final BN is dropped
        out_norm_eps=1e-06,
        model_kwargs=dict(
            n_win=8,  # official: 8 regions per side at 512x512 (classification: 7)
        ),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,  # official Fp16OptimizerHook: static loss scale 512
    # official: lr 1e-4 x 2 (8 GPUs instead of UniFormer's 4), weight decay 1e-4, no paramwise_cfg
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))

param_scheduler = [
    # 0.x CosineAnnealing (min_lr_ratio 1e-8) with a linear warmup over 1000 iterations from 0.1 x lr;
    # mmengine's chained schedulers multiply, so both start at iteration 0
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min_ratio=1e-8, by_epoch=False, begin=0,
         end=80000),
]

train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=4000)  # official: evaluate / checkpoint every 8000 // 2 iterations
default_hooks = dict(checkpoint=dict(interval=4000, max_keep_ckpts=1, save_best='mIoU'))
# official test resize: AlignResize (keep ratio to (2048, 512), then each side resized up to a
# multiple of 32) == mmseg 1.x Resize + ResizeToMultiple
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = None  # rayleizhu/BiFormer's README lists mIoU only
