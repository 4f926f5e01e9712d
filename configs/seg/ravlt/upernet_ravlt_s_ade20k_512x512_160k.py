# UperNet + RAVLT-S on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: qhfan/RALA segmentation/configs/RALA/RALA_Uper_s_2x.py
# Official result: 50.7 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (assumption: the config states 2/GPU and gpu_multipliers=1, not the GPU count).
_base_ = [
    '../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
model = dict(
    backbone=dict(
        model_name='ravlt_s',
        drop_path_rate=0.15,  # official
        out_norm=True,  # official extra_norms: LayerNorm2d (eps 1e-6) on every returned map
        out_norm_eps=1e-06,
        norm_eval=False,  # official norm_eval=True skips its nn.SyncBatchNorm layers: they train
        model_kwargs=dict(),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,  # official Fp16OptimizerHook: static loss scale 512
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),  # official keys (Swin / UniFormer recipe)
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),  # official block norms, PatchMerging BN, extra_norms -> backbone.out_norms
        'stem.norm': dict(decay_mult=1.),  # official stem BNs are unnamed Sequential members: decayed
    }))

param_scheduler = [
    # 0.x `poly` (power 1, min_lr 0) with a linear warmup over 1500 iterations from 1e-6 x lr: the poly factor over
    # the whole run times the warmup factor; mmengine's chained schedulers multiply, so both start at iteration 0
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]

train_dataloader = dict(batch_size=2)
train_cfg = dict(val_interval=8000)  # official: evaluate / checkpoint every 8000 iterations
default_hooks = dict(checkpoint=dict(interval=8000, max_keep_ckpts=1, save_best='mIoU'))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=55, rounding='round', source='qhfan/RALA README')
# the official seg backbone class is GLTA
official_backbone_params = dict(
    count=24_040_896, source='qhfan/RALA segmentation/mmseg/models/backbones/RALA.py')
