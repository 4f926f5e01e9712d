# UperNet + Agent-Swin-S on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_swin/upernet_agent_swin_s_9-12-14-7.py
# Official result: 48.08 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_agent_swin_t_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='agent_swin_s',
        model_kwargs=dict(
            agent_grids=((9, 9), (12, 12), (7, 7), (7, 7)),  # official downstream_agent_shapes (B-stages ignore it)
        ),
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=81, rounding='round', source='LeapLabTHU/Agent-Attention README (ADE20K tables)')
official_backbone_params = dict(
    count=48_899_028, source='LeapLabTHU/Agent-Attention downstream/segmentation/mmseg/models/backbones/agent_swin.py')
