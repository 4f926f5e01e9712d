"""Neighbourhood attention compiles a bounded number of kernel versions whatever the image size (issue 19).

mmseg's whole-image inference feeds each test image at its own size (short side 512, ADE20K's aspect ratios), and
every new map size or dilation that reached a kernel as a compile-time constant, or as an integer Triton
specialises (value 1, multiple of 16), would compile a new kernel on the first image of that size. The NA kernels
take the map size, the dilation and the tile counts as unspecialised runtime arguments
(``ops.neighborhood_attention.triton._MAP_ARGS``); these tests count the versions a real launch would compile.

How, without a GPU: DiNAT runs on the meta device with ``backend='triton'``; every ``attnzoo::`` NA call is
recorded, replayed through the op's own forward / backward under :func:`ops._plans.compile_target` (the
wrappers' real launch plans for sm_80 / sm_90, launches recorded instead of run), and each launch is keyed as
Triton's launcher keys its kernel cache: kernel, the binder's specialisation of every argument for
``GPUTarget("cuda", arch, 32)``, constexprs and launch options.
"""
from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ops import _plans
from ops._backend import use_backend

na_triton = importlib.import_module("ops.neighborhood_attention.triton")

# ADE20K-style whole-image inference sizes (H, W): 3:4, square, larger 3:4, 4:3 portrait, a panorama.
IMAGE_SIZES = ((512, 683), (512, 512), (640, 853), (480, 640), (384, 1024))


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("attnzoo::neighborhood_attention_2d"):
            self.calls.append((name, args))
        return func(*args, **(kwargs or {}))


def _na_calls(model_name: str, size: tuple[int, int], train: bool) -> list[tuple[str, tuple]]:
    """NA op calls of a backbone pass (forward_intermediates, as mmseg runs it) on the meta device."""
    import timm

    import zoo.models  # noqa: F401  (registers the models)

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    model = model.train(train)
    x = torch.empty(1, 3, *size, device="meta")
    recorder = _Recorder()
    with use_backend("triton"), recorder, torch.set_grad_enabled(train):
        outs = model.forward_intermediates(x, intermediates_only=True)
        if train:
            sum(o.float().sum() for o in outs).backward()
    return recorder.calls


def _jit_function(kernel):
    """The kernel as a ``JITFunction`` (under ``TRITON_INTERPRET=1`` it is an ``InterpretedFunction`` made from
    the same function and ``@triton.jit`` options)."""
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn, **kernel.kwargs)


def _version_key(launch: _plans.Launch, arch: int) -> tuple:
    """What Triton's launcher keys its compiled versions by: the binder's specialisation (types, 1-valued
    integers, multiples of 16, pointer alignment), the constexprs and the launch options."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = _jit_function(launch.kernel)
    binder = create_function_from_signature(kernel.signature, kernel.params, make_backend(GPUTarget("cuda", arch, 32)))
    _, specialization, options = binder(*launch.args, **launch.constexprs, num_warps=launch.plan.num_warps,
                                        num_stages=launch.plan.num_stages)
    return kernel.fn.__name__, repr(specialization), repr(sorted(options.items())), launch.plan


def _versions(model_name: str, sizes, arch: int, train: bool) -> dict[str, set]:
    """Distinct compiled versions per NA kernel over the passes at ``sizes``."""
    functions = {"attnzoo::neighborhood_attention_2d_fwd": na_triton._forward,
                 "attnzoo::neighborhood_attention_2d_bwd": na_triton._backward}
    versions: dict[str, set] = {}
    for size in sizes:
        for name, args in _na_calls(model_name, size, train):
            with _plans.compile_target(arch) as launches:
                functions[name](*args)
            for launch in launches:
                key = _version_key(launch, arch)
                versions.setdefault(key[0], set()).add(key)
    return versions


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
