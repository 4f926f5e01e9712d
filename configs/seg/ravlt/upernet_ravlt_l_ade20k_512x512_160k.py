# UperNet + RAVLT-L on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: qhfan/RALA segmentation/configs/RALA/RALA_Uper_l_2x.py
# Official result: 53.2 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (assumption: the config states 2/GPU and gpu_multipliers=1, not the GPU count).
_base_ = './upernet_ravlt_s_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='ravlt_l',
        drop_path_rate=0.55,  # official
    ),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=125, rounding='round', source='qhfan/RALA README')
# the official seg backbone class is GLTA
official_backbone_params = dict(
    count=93_561_760, source='qhfan/RALA segmentation/mmseg/models/backbones/RALA.py')
