# UperNet + DiNAT_s-Large on ADE20K: 640x640 crops, 160k iterations, single-scale test on
# the whole image (2560, 640) -- mmseg 1.x translation of the official recipe.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
#   segmentation/configs/dinat_s/upernet_dinat_s_large_640x640_160k_ade20k.py
# Official result: 53.4 mIoU (54.6 ms) (segmentation/DiNAT.md).
# Batch: 2 images/GPU x 8 GPUs (official comment).
# assumption: 640x640 crops as the config name and the paper state; the shipped config inherits
# the repo's only dataset base (_base_/datasets/ade20k.py: 512 crops, (2048, 512)).
# Backbone pretrained on ImageNet-22k (in22k 224 checkpoint), hence the *_21k model.
_base_ = './upernet_dinat_large_ade20k_640x640_160k.py'

model = dict(
    backbone=dict(
        model_name='dinat_s_large_21k',
        model_kwargs=dict(
            dilations=[  # official seg dilations (classification: 224-sized)
                [1, 20],
                [1, 10],
                [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5],
                [1, 2],
            ],
        ),
    ))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,  # official Fp16OptimizerHook: static loss scale 512
)

# Parameter counts that tests/integrations/test_seg_configs.py checks; mmseg ignores these names
published_params = dict(
    millions=234, rounding='round', source='SHI-Labs/Neighborhood-Attention-Transformer segmentation/DiNAT.md')
