# UperNet + DiNAT-Mini on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/dinat/upernet_dinat_mini_512x512_160k_ade20k.py
# Official result: 45.8 mIoU (47.2 ms) (segmentation/DiNAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_nat_mini_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='dinat_mini',
        model_kwargs=dict(
            dilations=[  # official seg dilations (classification: 224-sized)
                [1, 16, 1],
                [1, 4, 1, 8],
                [1, 2, 1, 3, 1, 4],
                [1, 2, 1, 2, 1],
            ],
        ),
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=50, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/DiNAT.md')
