# Semantic FPN + LITv2-M on ADE20K: 512x512 crops, 80k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: ziplab/LITv2 segmentation/configs/litv2/litv2_m_fpn_r50_512x512_80k_ade20k.py
# Official result: 45.7 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official config + README).
_base_ = './fpn_litv2_small_ade20k_512x512_80k.py'

model = dict(
    backbone=dict(
        model_name='litv2_medium',
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=52, rounding='round', source='ziplab/LITv2 segmentation/README.md')
