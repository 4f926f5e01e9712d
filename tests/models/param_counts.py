"""Official parameter count of every zoo model: ``sum(p.numel() for p in model.parameters())``.

`tests/models/test_models.py` builds every model in ``zoo.list_models()`` on the meta device and compares it with
this table; a zoo model missing here fails the suite, so every new family adds its variants, each with the
reference file (under /work/shared/reference) that the number comes from.
"""

PARAM_COUNTS: dict[str, int] = {
    # reference/biformer.md §3: official rayleizhu/BiFormer code (models/biformer.py)
    "biformer_tiny": 13_142_760,
    "biformer_small": 25_536_232,
    "biformer_base": 56_804_968,
    "biformer_stl": 28_372_552,
    "biformer_stl_nchw": 28_372_552,  # §3, models/biformer_stl_nchw.py
    # reference/davit.md §3: official dingmyu/davit code (tiny/small/base/large_window12_384) and timm 1.0.31 (all)
    "zoo_davit_tiny": 28_360_168,
    "zoo_davit_small": 49_745_896,
    "zoo_davit_base": 87_954_408,
    "zoo_davit_large": 196_811_752,
    "zoo_davit_huge": 348_922_856,
    "zoo_davit_giant": 1_406_470_120,
    "zoo_davit_base_fl": 90_370_048,
    "zoo_davit_huge_fl": 360_636_416,
    # reference/litv2.md §3: official ziplab/LITv2 code (classification/models/litv2.py, configs litv2-*.yaml)
    "litv2_small": 27_844_000,
    "litv2_medium": 48_830_368,
    "litv2_base": 86_520_704,
    # reference/emov2.md §3: official zhangzjn/EMOv2 code (model/lib_emo/emo2.py, EMO2_*_k5_hybrid[_256|_512]);
    # the window-8 variants have the window-7 ones' parameters
    "emo2_1m": 1_460_844,
    "emo2_1m_256": 1_460_844,
    "emo2_1m_512": 1_460_844,
    "emo2_2m": 2_384_312,
    "emo2_2m_256": 2_384_312,
    "emo2_2m_512": 2_384_312,
    "emo2_5m": 5_126_440,
    "emo2_5m_256": 5_126_440,
    "emo2_5m_512": 5_126_440,
    "emo2_20m": 20_195_208,
    "emo2_20m_256": 20_195_208,
    "emo2_50m": 49_815_560,
}
