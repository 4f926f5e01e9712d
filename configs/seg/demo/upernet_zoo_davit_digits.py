# Demo: UperNet on a small DaViT (zoo_davit_tiny's layout, narrower and shallower), classification-pretrained on
# scikit-learn's digits and fine-tuned on the synthetic digits data set (zoo/data/seg_synth.py: scikit-learn digits
# painted onto scikit-image photographs, ADE20K layout), CPU. Self-contained: no _base_ files. Run, in this order:
#   python train.py                                  # classification pretraining: output/digits_davit/export
#   python -m zoo.data.seg_synth data/seg_digits     # the data set
#   python train.py --config configs/seg/demo/upernet_zoo_davit_digits.py
#   python eval.py --config configs/seg/demo/upernet_zoo_davit_digits.py \
#       --checkpoint output/upernet_zoo_davit_digits/iter_3000.pth
# data_root and max_iters are read when the config is parsed, so override the places that use them:
#   --set train_dataloader.dataset.data_root=DIR --set val_dataloader.dataset.data_root=DIR
#   --set test_dataloader.dataset.data_root=DIR
#   --set train_cfg.max_iters=N --set train_cfg.val_interval=N --set param_scheduler.1.end=N
#   --set default_hooks.checkpoint.interval=N
# From random weights: --set model.backbone.init_cfg=null.
#
# Why the first version (400 iterations from scratch, 128 px crops, unweighted loss) scored mIoU 8.51 %: every pixel
# was predicted background, on the training images too, although the loss fell below that of the best constant
# prediction. The model had learnt where digits are but not which digit, so a digit pixel's probability was split
# over ten classes and background (94 % of the pixels) won every argmax. What fixed it, by measurement:
#   * which digit takes far more training than 400 x 8 crops: at full resolution the training set's own mIoU was as
#     low as the validation's (underfitting), rising ~linearly with iterations (14 % at 500, 27 % at 1000). The
#     digits are 8 x 8 scans, so the images are processed at half resolution (digits 16-32 px, 2-4 px per scan
#     pixel): 16 crops of 64 px per iteration cost less than 8 of 128 px and learn faster per iteration (17.5 % vs
#     ~10-14 % after 400-500), and the schedule is 3000 iterations instead of 400;
#   * class weights (background 0.1): without them background still wins every argmax as identities sharpen.
#     mmseg 1.2.2's CrossEntropyLoss(class_weight=...) fails on ignored pixels, hence
#     IgnoreSafeWeightedCrossEntropyLoss (zoo/integrations/mmseg.py);
#   * the backbone starts from the classification demo's export (same architecture; normalisation as in its
#     training, mean = std = 127.5). DaViT's channel attention sums over all tokens, so its softmax sharpens with
#     the token count (measured: mean max probability 0.06-0.17 at the pretraining's 32 px, 0.7-0.8 at 128-160 px),
#     which is one more reason to run at half resolution.
#   * predictions take the class weights back out (ClassWeightCorrectedEncoderDecoder): training with background
#     weight 0.1 leaves scores ~ w_c p(c|x), whose argmax over-predicts digits (background accuracy 95 %, mAcc 80 %
#     but mIoU 53.94 % on validation; on the training images, mIoU 72.4 % -> 80.2 % with the prior removed).
# BN in the head is not the problem: train- and eval-mode predictions were identical (all background).
# Measured (the README's four commands on a fresh clone, one thread, the idle 2-core dev machine, 2026-12-07):
# held-out validation mIoU 60.02 % (aAcc 95.83 %, mAcc 71.39 %; IoU background 96.2, digits 0-9: 55.1 66.4 52.0
# 54.3 69.0 58.5 52.4 64.4 43.9 48.1), from the run's last validation and from eval.py alike; 53.94 % with the plain
# argmax of the weighted scores. Wall clock of the four commands: 11.8 min (pretraining 100 s, data 6 s, this
# training 592 s at ~0.19 s per iteration, eval 9 s); 25.6 min on the same machine under load ~4-5.
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
        model_name='zoo_davit_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        model_kwargs=dict(depths=(1, 1, 1, 1), embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8),
                          window_size=4),
        init_cfg=dict(type='Pretrained', checkpoint='output/digits_davit/export')),
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
