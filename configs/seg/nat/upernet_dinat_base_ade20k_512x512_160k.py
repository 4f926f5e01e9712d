# UperNet + DiNAT-Base on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/dinat/upernet_dinat_base_512x512_160k_ade20k.py
# Official result: 49.6 mIoU (50.4 ms) (segmentation/DiNAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_dinat_small_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='dinat_base',
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=123, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/DiNAT.md')
