# Semantic FPN + Agent-PVT-S on ADE20K: 512x512 crops, 40k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_pvt/fpn_agent_pvt_s_12-16-28-28.py
# Official result: 44.18 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './fpn_agent_pvt_t_ade20k_512x512_40k.py'

model = dict(
    backbone=dict(
        model_name='agent_pvt_s',
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=24, rounding='round', source='LeapLabTHU/Agent-Attention README (ADE20K tables)')
official_backbone_params = dict(
    count=20_122_066, source='LeapLabTHU/Agent-Attention downstream/segmentation/mmseg/models/backbones/agent_pvt.py')
