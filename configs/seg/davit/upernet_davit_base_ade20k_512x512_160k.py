# UperNet + DaViT-B on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: dingmyu/davit mmseg/configs/upernet_davit_512x512_160k_ade20k.py (tiny; small / base follow it with their
#   own widths, as the README reports them)
# Official result: 49.4 mIoU (README).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_davit_tiny_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='zoo_davit_base',
        drop_path_rate=0.3,  # assumption: only the tiny recipe is shipped (0.3); S / B are not stated, 0.3 kept
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=121, rounding='round', source='dingmyu/davit README')
official_backbone_params = dict(
    count=86_931_200, source='dingmyu/davit mmseg/mmseg/models/backbones/davit.py')
