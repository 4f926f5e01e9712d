# Semantic FPN + RAVLT-L on ADE20K: 512x512 crops, 80k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: qhfan/RALA segmentation/configs/RALA/RALA_FPN_l_1x.py
# Official result: 52.6 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (assumption: the config states 2/GPU and gpu_multiplier=1, not the GPU count).
_base_ = './fpn_ravlt_t_ade20k_512x512_80k.py'

model = dict(
    backbone=dict(
        model_name='ravlt_l',
        drop_path_rate=0.55,  # official
    ),
    neck=dict(in_channels=[96, 192, 448, 640]))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=98, rounding='round', source='qhfan/RALA README')
# the official seg backbone class is GLTA
official_backbone_params = dict(
    count=93_561_760, source='qhfan/RALA segmentation/mmseg/models/backbones/RALA.py')
