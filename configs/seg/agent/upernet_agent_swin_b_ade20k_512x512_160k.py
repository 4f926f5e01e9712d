# UperNet + Agent-Swin-B on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_swin/upernet_agent_swin_b_9-12-14-7.py
# Official result: 48.73 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_agent_swin_t_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='agent_swin_b',
        drop_path_rate=0.5,  # official
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
# The README's 121M is not the official code's count: its seg backbone (downstream/segmentation/mmseg/models/
# backbones/agent_swin.py, built with this config's arguments) has 87,071,888 parameters, + UperNet / FCN
# heads (34,534,700) = 121,606,588. The zoo backbone has exactly as many; the test takes the official count.
published_params = dict(
    millions=122, rounding='round', source='official code (README: 121M)')
official_backbone_params = dict(
    count=87_071_888, source='LeapLabTHU/Agent-Attention downstream/segmentation/mmseg/models/backbones/agent_swin.py')
