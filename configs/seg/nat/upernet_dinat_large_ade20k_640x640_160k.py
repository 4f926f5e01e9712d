# UperNet + DiNAT-Large on ADE20K: 640x640 crops, 160k iterations, single-scale test on
# the whole image (2560, 640) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/dinat/upernet_dinat_large_640x640_160k_ade20k.py
# Official result: 54.0 mIoU (54.9 ms) (segmentation/DiNAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
# assumption: 640x640 crops as the config name and the paper state; the shipped config inherits
# the repo's only dataset base (_base_/datasets/ade20k.py: 512 crops, (2048, 512)).
# Backbone pretrained on ImageNet-22k (in22k 224 checkpoint), hence the *_21k model.
# fp32 training: the official config comments the Fp16OptimizerHook out for DiNAT-L.
_base_ = [
    '../_base_/models/upernet.py', '../_base_/datasets/ade20k_640x640.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        model_name='dinat_large_21k',
        drop_path_rate=0.3,  # official
        out_norm=True,  # official norm{i} (LayerNorm) on every returned map
        model_kwargs=dict(
            dilations=[  # official seg dilations (classification: 224-sized)
                [1, 20, 1],
                [1, 5, 1, 10],
                [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5],
                [1, 2, 1, 2, 1],
            ],
        ),
        init_cfg=None,  # ImageNet weights: dict(type='Pretrained', checkpoint=PATH), zoo export / official .pth
    ),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'rpb': dict(decay_mult=0.),  # official: relative position biases
        'norm': dict(decay_mult=0.),  # official: every LayerNorm (the zoo keeps the official norm names)
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
    millions=238, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/DiNAT.md')
