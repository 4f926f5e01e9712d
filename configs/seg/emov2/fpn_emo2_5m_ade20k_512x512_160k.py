# Semantic FPN + EMOv2-5M on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: zhangzjn/EMOv2 downstreams/seg/configs/sem_fpn/fpn_emo2_5M-160k_ade20k-512x512.py (already mmseg 1.2.2)
# Official result: 42.4 mIoU (README).
# Batch: 8 images/GPU x 4 GPUs (official config; 4 GPUs per the released log).
_base_ = './fpn_emo2_1m_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='emo2_5m',
        drop_path_rate=0.05,  # official
    ),
    neck=dict(in_channels=[48, 72, 160, 288]))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
# the README truncates: the official segmentor has 8.99M
published_params = dict(
    millions=8.9, rounding='trunc', source='zhangzjn/EMOv2 README (Semantic FPN table)')
official_backbone_params = dict(
    count=4_836_864, source='zhangzjn/EMOv2 downstreams/seg/backbones/emo2.py')
