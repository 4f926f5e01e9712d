"""Bad input into models: architecture arguments, HAT's input contract, non-finite values.

The input contract of every classification model (rank, channels, dtype, empty batch, size below the total stride)
is tested per family in test_models.py::test_input_contract; here: what that test cannot reach. Each test asserts the
exact error type and that the message names the offending value.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the zoo models)
from zoo.errors import InputError, ModelInputError

pytestmark = pytest.mark.usefixtures("one_thread")

# (model, argument, bad value, what the message must say): every window / kernel / region / agent argument of every
# family, with the values that used to fail late (ZeroDivisionError, `%` TypeError at the first forward) or not at all
BAD_ARCH_ARGS = [
    ("zoo_davit_tiny", "window_size", 0, r"window_size must be a positive int or a tuple of 2 positive ints, got 0"),
    ("zoo_davit_tiny", "window_size", "7", r"window_size must be .* got '7'"),
    ("zoo_davit_tiny", "window_size", (7,), r"window_size must be .* got \(7,\)"),
    ("biformer_tiny", "n_win", 0, r"n_win must be .* got 0"),
    ("biformer_tiny", "n_win", 7.5, r"n_win must be .* got 7.5"),
    ("biformer_tiny", "topks", 4, r"topks must be a tuple of 4 ints, got 4"),
    ("litv2_small", "local_ws", 2, r"local_ws must be a tuple of 4 int >= 0s, got 2"),
    ("litv2_small", "local_ws", (0, 0, 0, 1), r"local_ws \(0, 0, 0, 1\) must be >= 1 in every stage with attention"),
    ("emo2_1m", "window_size", 0, r"window_size must be .* got 0"),
    ("emo2_1m", "window_size", "7", r"window_size must be .* got '7'"),
    ("nat_mini", "kernel_size", (7,), r"kernel_size must be a positive int, got \(7,\)"),
    ("nat_mini", "kernel_size", "7", r"kernel_size must be a positive int, got '7'"),
    ("nat_mini", "dilations", 2, r"dilations must be a tuple with one entry per stage \(4\).* got 2"),
    ("nat_isotropic_small", "kernel_size", 0, r"NATIsotropic: kernel_size must be a positive int, got 0"),
    ("nat_isotropic_small", "dilation", 0, r"dilation must be a positive int, got 0"),
    ("agent_swin_t", "window_size", 0, r"window_size must be a positive int, got 0"),
    ("agent_swin_t", "agent_num", 49, r"agent_num must be a tuple of 4 positive ints, got 49"),
    ("agent_pvt_t", "agent_num", 0, r"agent_num must be a tuple of 4 positive ints, got 0"),
    ("agent_cswin_t", "split_size", 7, r"split_size must be a tuple of 4 positive ints, got 7"),
    ("agent_deit_t", "agent_num", 7.5, r"agent_num must be a positive int or a tuple of 12 positive ints, got 7.5"),
    ("hat_s_x2", "window_size", "16", r"HAT: window_size must be a positive int, got '16'"),
    ("hat_s_x2", "overlap_ratio", "0.5", r"overlap_ratio must be a number >= 0 \(official 0.5\), got '0.5'"),
    ("hat_s_x2", "overlap_ratio", -1, r"overlap_ratio must be a number >= 0 .* got -1"),
]


@pytest.mark.parametrize("name, arg, value, message", BAD_ARCH_ARGS,
                         ids=[f"{n}-{a}-{v!r}" for n, a, v, _ in BAD_ARCH_ARGS])
def test_bad_architecture_argument_fails_when_built(name, arg, value, message):
    with pytest.raises(InputError, match=message), torch.device("meta"):
        timm.create_model(name, **{arg: value})


def test_hat_input_contract():
    with torch.device("meta"):
        model = timm.create_model("hat_s_x2")
        for bad, message in [
            (torch.empty(1, 1, 32, 32), r"hat_s_x2: expected an image batch of shape \(B, 3, H, W\), got \(1, 1, 32, "),
            (torch.empty(3, 32, 32), r"got \(3, 32, 32\)"),
            (torch.empty(1, 3, 32, 32, dtype=torch.uint8), r"floating-point .* got torch.uint8"),
            (torch.empty(0, 3, 32, 32), r"batch is empty \(shape \(0, 3, 32, 32\)\)"),
        ]:
            with pytest.raises(ModelInputError, match=message):
                model(bad)


# one small model per family, at its smallest working input: NaN in one image must give NaN logits for that image,
# finite logits for the others (no cross-talk in eval mode), and never crash the process
NAN_MODELS = [
    ("zoo_davit_tiny", 64), ("biformer_tiny", 64), ("litv2_small", 64), ("emo2_1m", 64), ("ravlt_t", 64),
    ("nat_mini", 64), ("agent_pvt_t", 64), ("agent_swin_t", 64), ("agent_cswin_t", 64), ("agent_deit_t", 224),
]


@pytest.mark.parametrize("name, size", NAN_MODELS, ids=[n for n, _ in NAN_MODELS])
def test_nan_input_gives_nan_output_not_a_crash(name, size):
    # a child process: a crash (LITv2's deformable conv used to segfault on NaN offsets) fails this test instead of
    # killing the test run
    code = textwrap.dedent(f"""
        import torch, timm, zoo
        torch.manual_seed(0)
        model = timm.create_model({name!r}, num_classes=10).eval()
        x = torch.randn(3, 3, {size}, {size})
        x[1] = float('nan')
        x[2, :, :4, :4] = float('inf')
        with torch.no_grad():
            y = model(x)
        print(int(torch.isfinite(y[0]).all()), int(torch.isnan(y[1]).all()), int(torch.isfinite(y[2]).all()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{name} crashed on NaN input (exit {proc.returncode}): {proc.stderr[-2000:]}"
    clean, nan_row, _ = proc.stdout.split()
    assert clean == "1", f"{name}: NaN in one image leaked into another's logits"
    assert nan_row == "1", f"{name}: an all-NaN image gave finite logits"
