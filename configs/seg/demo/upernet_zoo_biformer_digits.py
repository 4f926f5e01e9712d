# Demo, second family: the DaViT demo (upernet_zoo_davit_digits.py, whose comments say what was wrong with the first
# version and what fixed it) with a narrowed biformer_tiny (bi-level routing attention: each query region attends
# to its top-k routed regions) instead of the DaViT; everything else is the same. Run, in this order:
#   python train.py --config configs/cls/digits_biformer.yaml   # pretraining: output/digits_biformer/export
#   python -m zoo.data.seg_synth data/seg_digits
#   python train.py --config configs/seg/demo/upernet_zoo_biformer_digits.py
#   python eval.py --config configs/seg/demo/upernet_zoo_biformer_digits.py \
#       --checkpoint output/upernet_zoo_biformer_digits/iter_3000.pth
# Measured (its four commands, one thread, on the 2-core dev machine beside the DaViT demo and another engineer's
# tests, load ~4-5): held-out validation mIoU 58.53 % (aAcc 95.62 %, mAcc 71.07 %; IoU background 96.1, digits 0-9:
# 61.0 67.6 52.3 55.5 67.5 51.9 46.3 62.7 43.4 39.5); 52.01 % with the plain argmax of the weighted scores. Wall
# clock 23.6 min on that loaded machine (pretraining 186 s, 100.00 % held-out top-1).
# Everything but the backbone is the DaViT demo's, inherited (mmengine `_base_`).
_base_ = './upernet_zoo_davit_digits.py'

model = dict(
    backbone=dict(
        model_name='biformer_tiny',
        # as configs/cls/digits_biformer.yaml trains it (`_delete_`: not merged with the DaViT's arguments)
        model_kwargs=dict(_delete_=True, depths=(1, 1, 1, 1), embed_dims=(32, 64, 128, 256), head_dim=32, n_win=4,
                          topks=(1, 4, 4, -2)),
        init_cfg=dict(type='Pretrained', checkpoint='output/digits_biformer/export')))
