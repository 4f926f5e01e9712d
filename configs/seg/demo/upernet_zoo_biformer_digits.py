# Demo, second family: the DaViT demo (upernet_zoo_davit_digits.py, whose comments say what was wrong with the first
# version and what fixed it) with a narrowed biformer_tiny (bi-level routing attention: each query region attends
# to its top-k routed regions) instead of the DaViT; everything else is the same. Run, in this order:
#   python train.py --config configs/cls/digits_biformer.yaml   # pretraining: output/digits_biformer/export
#   python -m zoo.data.seg_synth data/seg_digits
#   python train.py --config configs/seg/demo/upernet_zoo_biformer_digits.py
#   python eval.py --config configs/seg/demo/upernet_zoo_biformer_digits.py \
#       --checkpoint output/upernet_zoo_biformer_digits/iter_3000.pth
# Measured (its four commands, one thread, on the 2-core dev machine beside the DaViT demo and another engineer's
# tests, load ~4-5): held-out validation mIoU 58.53 % (aAcc 95.62 %, mAcc 71.07 %; IoU background 96.1, digits 0-9:
# 61.0 67.6 52.3 55.5 67.5 51.9 46.3 62.7 43.4 39.5); 52.01 % with the plain argmax of the weighted scores. Wall
# clock 23.6 min on that loaded machine (pretraining 186 s, 100.00 % held-out top-1).
custom_imports = dict(imports=['zoo.integrations.mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'

data_root = 'data/seg_digits'
# the images are scored at half their size (scale = 80 px side for the 160 px images): digits become 16-32 px
scale = (80, 80)
crop_size = (64, 64)
# after ADE20K's reduce_zero_label: 0 = background, 1 + d = digit d (the PNGs' 0, the digits' rims, is ignored)
metainfo = dict(
    classes=('background', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
             [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]])
num_classes = 11
class_weight = [0.1] + [1.0] * 10
max_iters = 3000
threads = 1  # torch threads (zoo/engine/seg.py): a second one slows shared machines down manyfold

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    # EncoderDecoder whose predictions take the loss's class weights back out (zoo/integrations/mmseg.py)
    type='ClassWeightCorrectedEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ZooBackbone',
        model_name='biformer_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        # as configs/cls/digits_biformer.yaml trains it
        model_kwargs=dict(depths=(1, 1, 1, 1), embed_dims=(32, 64, 128, 256), head_dim=32, n_win=4,
                          topks=(1, 4, 4, -2)),
        init_cfg=dict(type='Pretrained', checkpoint='output/digits_biformer/export')),
    decode_head=dict(
        type='UPerHead',
        in_channels=[32, 64, 128, 256],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='IgnoreSafeWeightedCrossEntropyLoss', class_weight=class_weight, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=128,
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='IgnoreSafeWeightedCrossEntropyLoss', class_weight=class_weight, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# ADE20K's layout and label convention, read by mmseg's generic dataset with ADE20KDataset's fixed arguments
# (ADE20KDataset itself only accepts subsets of its 150 class names as metainfo)
dataset_type = 'BaseSegDataset'
ade20k_layout = dict(img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.95),
    dict(type='PhotoMetricDistortion'),  # no flips: a mirrored digit is not a digit
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),  # labels are loaded after it: scored at full size
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        **ade20k_layout,
        data_root=data_root,
        metainfo=metainfo,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        **ade20k_layout,
        data_root=data_root,
        metainfo=metainfo,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
