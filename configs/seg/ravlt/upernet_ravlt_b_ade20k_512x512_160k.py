# UperNet + RAVLT-B on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: qhfan/RALA segmentation/configs/RALA/RALA_Uper_b_2x.py
# Official result: 52.5 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (assumption: the config states 2/GPU and gpu_multipliers=1, not the GPU count).
_base_ = './upernet_ravlt_s_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='ravlt_b',
        drop_path_rate=0.4,  # official
    ),
    decode_head=dict(in_channels=[96, 192, 384, 512]),
    auxiliary_head=dict(in_channels=384))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=77, rounding='round', source='qhfan/RALA README')
# the official seg backbone class is GLTA
official_backbone_params = dict(
    count=46_691_296, source='qhfan/RALA segmentation/mmseg/models/backbones/RALA.py')
