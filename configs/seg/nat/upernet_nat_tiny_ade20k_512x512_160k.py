# UperNet + NAT-Tiny on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/nat/upernet_nat_tiny_512x512_160k_ade20k.py
# Official result: 47.1 mIoU (48.4 ms) (segmentation/NAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_nat_mini_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='nat_tiny',
        drop_path_rate=0.3,  # official
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=58, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/NAT.md')
