"""Neighbourhood attention compiles a bounded number of kernel versions whatever the image size (issue 19).

mmseg's whole-image inference feeds each test image at its own size (short side 512, ADE20K's aspect ratios), and
every new map size or dilation that reached a kernel as a compile-time constant, or as an integer Triton
specialises (value 1, multiple of 16), would compile a new kernel on the first image of that size. The NA kernels
take the map size, the dilation and the tile counts as unspecialised runtime arguments
(``ops.neighborhood_attention.triton._MAP_ARGS``); these tests count the versions a real launch would compile.

How, without a GPU: :func:`benchmarks.compile_check.compile_keys` runs DiNAT on the meta device with
``backend='triton'``, replays every op call through the op's own forward / backward under
:func:`ops._plans.compile_target` (the wrappers' real launch plans for sm_80 / sm_90, launches recorded instead of
run) and keys each launch as Triton's launcher keys its kernel cache: the binder's specialisation of every argument
for ``GPUTarget("cuda", arch, 32)``, constexprs and launch options.
"""
from __future__ import annotations

import pytest

from benchmarks.compile_check import Source, compile_keys

# ADE20K-style whole-image inference sizes (H, W): 3:4, square, larger 3:4, 4:3 portrait, a panorama.
IMAGE_SIZES = ((512, 683), (512, 512), (640, 853), (480, 640), (384, 1024))


def _versions(model_name: str, sizes, arch: int, train: bool) -> dict[str, list[str]]:
    """Distinct compiled versions per NA kernel over backbone passes (forward_intermediates, as mmseg runs it) at
    ``sizes``."""
    sources = [Source(model_name, (3, *size), backbone=True) for size in sizes]
    return compile_keys(sources, arch, "fp32", backward=train)


@pytest.mark.parametrize("arch", [80, 90])
def test_whole_image_inference_at_five_sizes_compiles_two_versions(arch):
    """dinat_mini (dilations 1 / 8 / 4 / 2 per stage) at five ADE20K test sizes: 2 forward versions in all, the
    same 2 as at one size -- one per heads specialisation (heads 2, 4, 8 vs 16, a multiple of 16). Before the map
    size and dilation became runtime arguments: 21 versions for these five sizes (6 at one), on sm_80 and sm_90."""
    one = _versions("dinat_mini", IMAGE_SIZES[:1], arch, train=False)
    five = _versions("dinat_mini", IMAGE_SIZES, arch, train=False)
    assert set(five) == {"neighborhood_attention_2d_fwd_kernel"}
    assert five == one
    assert len(five["neighborhood_attention_2d_fwd_kernel"]) == 2


def test_training_at_two_sizes_compiles_the_same_backward_versions():
    """Training (the seg crop, then another size): the backward kernels compile no new versions either (2 per
    kernel; before: 21 per kernel over the five inference sizes)."""
    one = _versions("dinat_mini", ((512, 512),), 90, train=True)
    two = _versions("dinat_mini", ((512, 512), (480, 640)), 90, train=True)
    assert set(two) == {"neighborhood_attention_2d_fwd_kernel", "neighborhood_attention_2d_bwd_dq_kernel",
                        "neighborhood_attention_2d_bwd_dkdv_kernel"}
    assert two == one
    assert all(len(v) == 2 for v in two.values()), {k: len(v) for k, v in two.items()}
