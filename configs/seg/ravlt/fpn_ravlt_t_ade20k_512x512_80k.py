# Semantic FPN + RAVLT-T on ADE20K: 512x512 crops, 80k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: qhfan/RALA segmentation/configs/RALA/RALA_FPN_{s,b,l}_1x.py (no T config shipped)
# Official result: 47.9 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (assumption: the config states 2/GPU and gpu_multiplier=1, not the GPU count).
# assumption: the repo ships no RAVLT-T segmentation config (README reports T); this follows the
# S / B / L FPN configs with the classification drop_path 0.1.
_base_ = [
    '../_base_/models/fpn.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
model = dict(
    backbone=dict(
        model_name='ravlt_t',
        drop_path_rate=0.1,  # assumption: the classification recipe value
        out_norm=True,  # official extra_norms: LayerNorm2d (eps 1e-6) on every returned map
        out_norm_eps=1e-06,
        norm_eval=False,  # official norm_eval=True skips its nn.SyncBatchNorm layers: they train
        model_kwargs=dict(),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    type='OptimWrapper',
    # official: AdamW lr 1e-4, weight decay 1e-4 on every parameter, no gradient clipping
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

param_scheduler = [
    # 0.x `poly`: power 0.9, min_lr 1e-06, no warmup
    dict(type='PolyLR', power=0.9, eta_min=1e-06, by_epoch=False, begin=0, end=80000),
]

train_dataloader = dict(batch_size=2)
train_cfg = dict(val_interval=4000)  # official: evaluate / checkpoint every 4000 iterations
default_hooks = dict(checkpoint=dict(interval=4000))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=18, rounding='round', source='qhfan/RALA README')
# the official seg backbone class is GLTA; T: built with the T classification widths
official_backbone_params = dict(
    count=13_347_328, source='qhfan/RALA segmentation/mmseg/models/backbones/RALA.py')
