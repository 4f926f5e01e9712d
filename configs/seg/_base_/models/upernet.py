# UperNet (+ auxiliary FCN head on stage 3) over a zoo backbone, as every official UperNet recipe builds it:
# UPerHead channels 512, pool scales (1, 2, 3, 6), dropout 0.1; FCNHead 256 channels, one conv, loss weight 0.4;
# SyncBN in the heads (mmengine reverts it to BatchNorm when training is not distributed). Recipes set the
# backbone and the heads' in_channels.
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
        drop_path_rate=0.3,
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        model_kwargs=dict(),
        init_cfg=None),  # dict(type='Pretrained', checkpoint=PATH): zoo export dir / .safetensors / official .pth
    decode_head=dict(
        type='UPerHead',
        in_channels=[96, 192, 384, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=384,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
