# UperNet + DiNAT_s-Small on ADE20K: 512x512 crops, 160k iterations, single-scale test on
# the whole image (2048, 512) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/dinat_s/upernet_dinat_s_small_512x512_160k_ade20k.py
# Official result: 48.6 mIoU (49.9 ms) (segmentation/DiNAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
_base_ = './upernet_dinat_s_tiny_ade20k_512x512_160k.py'

model = dict(
    backbone=dict(
        model_name='dinat_s_small',
        model_kwargs=dict(
            dilations=[  # official seg dilations (classification: 224-sized)
                [1, 16],
                [1, 8],
                [1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4],
                [1, 2],
            ],
        ),
    ))

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=81, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/DiNAT.md')
