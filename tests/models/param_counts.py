"""Official parameter count of every zoo model: ``sum(p.numel() for p in model.parameters())``.

`tests/models/test_models.py` builds every model in ``zoo.list_models()`` on the meta device and compares it with
this table; a zoo model missing here fails the suite, so every new family adds its variants, each with the
official code (owner/repo and file) that the number was measured on.
"""

PARAM_COUNTS: dict[str, int] = {
    # official rayleizhu/BiFormer code (models/biformer.py)
    "biformer_tiny": 13_142_760,
    "biformer_small": 25_536_232,
    "biformer_base": 56_804_968,
    "biformer_stl": 28_372_552,
    "biformer_stl_nchw": 28_372_552,  # models/biformer_stl_nchw.py
    # official dingmyu/davit code (tiny/small/base/large_window12_384) and timm 1.0.31 (all)
    "zoo_davit_tiny": 28_360_168,
    "zoo_davit_small": 49_745_896,
    "zoo_davit_base": 87_954_408,
    "zoo_davit_large": 196_811_752,
    "zoo_davit_huge": 348_922_856,
    "zoo_davit_giant": 1_406_470_120,
    "zoo_davit_base_fl": 90_370_048,
    "zoo_davit_huge_fl": 360_636_416,
    # official ziplab/LITv2 code (classification/models/litv2.py, configs litv2-*.yaml)
    "litv2_small": 27_844_000,
    "litv2_medium": 48_830_368,
    "litv2_base": 86_520_704,
    # official zhangzjn/EMOv2 code (model/lib_emo/emo2.py, EMO2_*_k5_hybrid[_256|_512]);
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
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_swin.py,
    # agent_cswin.py) at each variant's resolution
    "agent_swin_t": 28_902_964,
    "agent_swin_s": 49_666_684,
    "agent_swin_s_288": 49_707_964,
    "agent_swin_b": 88_095_096,
    "agent_swin_b_384": 88_305_016,
    "agent_cswin_t": 20_458_672,
    "agent_cswin_s": 32_814_100,
    "agent_cswin_b": 73_249_696,
    "agent_cswin_b_384": 73_328_416,
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_pvt.py)
    "agent_pvt_t": 11_570_352,
    "agent_pvt_s": 20_635_066,
    "agent_pvt_m": 35_921_746,
    "agent_pvt_m_256": 36_083_682,
    "agent_pvt_l": 48_738_180,
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_deit.py)
    "agent_deit_t": 6_015_640,
    "agent_deit_s": 22_647_112,
    "agent_deit_s_448": 23_070_472,
    "agent_deit_b": 87_204_904,
    # official XPixelGroup/HAT code (hat/archs/hat_arch.py, released network_g configs)
    "hat_s_x2": 9_473_471,
    "hat_s_x3": 9_658_111,
    "hat_s_x4": 9_621_183,
    "hat_x2": 20_624_795,
    "hat_x3": 20_809_435,
    "hat_x4": 20_772_507,
    "hat_l_x2": 40_698_863,
    "hat_l_x3": 40_883_503,
    "hat_l_x4": 40_846_575,
    # official qhfan/RALA code (classfication/RALA.py, RAVLT_T/S/B/L)
    "ravlt_t": 14_897_768,
    "ravlt_s": 25_591_208,
    "ravlt_b": 48_241_288,
    "ravlt_l": 95_242_440,
    # official SHI-Labs/Neighborhood-Attention-Transformer code (classification/*.py) with a naive natten-0.14
    # stand-in; dinat_large_21k_11x11 / dinat_s_large_21k counted the same way with num_classes=21841
    "nat_mini": 19_984_174,
    "nat_tiny": 27_901_582,
    "nat_small": 50_743_297,
    "nat_base": 89_769_652,
    "dinat_mini": 19_984_174,
    "dinat_tiny": 27_901_582,
    "dinat_small": 50_719_681,
    "dinat_base": 89_769_652,
    "dinat_large": 200_943_514,
    "dinat_large_384": 200_943_514,
    "dinat_large_384_11x11": 201_144_250,
    "dinat_large_21k": 232_976_131,
    "dinat_large_21k_11x11": 233_176_867,
    "dinat_s_tiny": 28_288_354,
    "dinat_s_small": 49_606_258,
    "dinat_s_base": 87_768_224,
    "dinat_s_large": 196_532_476,
    "dinat_s_large_384": 196_532_476,
    "dinat_s_large_21k": 228_565_093,
    "nat_isotropic_small": 21_999_736,
    "dinat_isotropic_small": 21_999_736,
    "vitrpb_small": 22_080_376,
    "nat_isotropic_base": 86_465_800,
    "dinat_isotropic_base": 86_465_800,
    "vitrpb_base": 86_627_080,
}
