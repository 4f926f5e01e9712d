# Semantic FPN over a zoo backbone, as every official Semantic FPN recipe builds it: FPN neck (256 channels,
# 4 outputs) + FPNHead (128 channels, strides 4/8/16/32, dropout 0.1), SyncBN in the head (mmengine reverts it to
# BatchNorm when training is not distributed). Recipes set the backbone and the neck's in_channels.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ZooBackbone',
        model_name=None,  # set by the recipe
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        model_kwargs=dict(),
        init_cfg=None),  # dict(type='Pretrained', checkpoint=PATH): zoo export dir / .safetensors / official .pth
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 320, 512],
        out_channels=256,
        num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
