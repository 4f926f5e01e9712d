"""Compile-check tier: every Triton kernel compiled ahead of time for a GPU on the CPU (benchmarks/compile_check.py).

The kernels are compiled with Triton's own compiler for ``GPUTarget("cuda", arch, 32)`` with the launches the
wrappers' real launch plans make (recorded under :func:`ops._plans.compile_target` from zoo models run on the meta
device), and each compiled version must

* fit the target's shared memory per block (``metadata.shared`` <= 227 KB on sm_90, 163 KB on sm_80, 99 KB on
  sm_86 / sm_89: Triton raises ``OutOfResources`` above it instead of launching), and
* spill at most ``SPILL_BOUND[dtype]`` bytes per thread (``ptxas -v`` spill stores of the bundled ptxas).

Default tier: every registered model at its default size and every recipe size (cls / sr recipes, seg backbones
at their crop and at 512 x 683), sm_80 and sm_90, exact fp32 (IEEE dots), fp32 with TF32 dots, fp16 and bf16:
every kernel version those launches compile (about 1,300). A version whose Triton cache hash is in the record
(``benchmarks/results/compile_check.json``) takes the recorded numbers; every other version -- a kernel, plan or
shape changed since the record was written -- is compiled, and ``VERIFY`` recorded versions drawn at random are
compiled again and must give the recorded numbers. ``-m slow``: the same sources compiled afresh, without the
record, for sm_80, sm_86 and sm_90 (sm_89 has sm_86's shared memory and compiles to the same code as far as these
kernels go: Ampere-style mma, no wgmma). Refresh the record after changing kernels or plans:
``python -m benchmarks.compile_check --arch 80 --arch 90 --recipes --record --update-record --jobs 2``.
The check runs in a subprocess: this process has imported triton for its interpreter.

The plan tests below need no compiler: they read the plans and the launches they record.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ops import _plans
from benchmarks.compile_check import OPS, SPILL_BOUND

ROOT = Path(__file__).resolve().parents[2]
ALL_DTYPES = "fp32,tf32,fp16,bf16"
VERIFY = 8  # recorded versions compiled again per dtype in the default tier


def _all_kernels() -> set[str]:
    names = set()
    for op in OPS:
        module = importlib.import_module(f"ops.{op}.triton")
        names |= {name for name in vars(module) if name.endswith("_kernel")}
    return names


def _compile_check(tmp_path: Path, *args: str, timeout: int) -> list[dict]:
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-m", "benchmarks.compile_check", "--quiet", "--json", str(out),
                    "--jobs", str(os.cpu_count() or 1), *args], cwd=ROOT, env=env, check=True, timeout=timeout)
    return json.loads(out.read_text())["rows"]


def _problems(rows: list[dict]) -> list[str]:
    return [
        f"sm_{r['arch']} {r['dtype']} {r['kernel']} [{r['config']}] warps {r['num_warps']} stages {r['num_stages']}: "
        f"shared {r['shared']} B (limit {r['smem_limit']}), spill stores {r['spill_stores']} B "
        f"(bound {SPILL_BOUND[r['dtype']]}); from {r['sources'][:3]}"
        for r in rows if r["shared"] > r["smem_limit"] or r["spill_stores"] > SPILL_BOUND[r["dtype"]]
    ]


@pytest.fixture(scope="module")
def recorded_rows(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("compile")
    return _compile_check(tmp, "--arch", "80", "--arch", "90", "--dtypes", ALL_DTYPES, "--recipes", "--record",
                          "--verify", str(VERIFY), timeout=3600)


def test_every_kernel_checked_in_every_dtype(recorded_rows):
    for arch in (80, 90):
        for dtype in ALL_DTYPES.split(","):
            got = {r["kernel"] for r in recorded_rows if (r["arch"], r["dtype"]) == (arch, dtype)}
            assert got == _all_kernels(), (arch, dtype, _all_kernels() - got)


def test_every_model_and_recipe_fits_sm80_and_sm90(recorded_rows):
    """Every kernel version: shared memory within the target's limit, spills within SPILL_BOUND."""
    assert not _problems(recorded_rows), "\n".join(_problems(recorded_rows))


def test_record_agrees_with_fresh_compiles(recorded_rows):
    """The recorded versions compiled again give the recorded numbers (and the record is in use: it is not
    stale for most versions)."""
    checked = [r for r in recorded_rows if "verified" in r]
    assert [r for r in checked if not r["verified"]] == []
    recorded = sum(r["recorded"] for r in recorded_rows)
    per_dtype = [sum(r["recorded"] for r in recorded_rows if r["dtype"] == d) for d in ALL_DTYPES.split(",")]
    assert len(checked) == sum(min(VERIFY, n) for n in per_dtype)
    assert recorded >= len(recorded_rows) // 2, "the record is stale: refresh it (see the module docstring)"


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 86, 90])
def test_every_model_and_recipe_fits(arch, tmp_path):
    """Without the record: every version compiled afresh, sm_86 included."""
    rows = _compile_check(tmp_path, "--arch", str(arch), "--dtypes", ALL_DTYPES, "--recipes", timeout=7200)
    assert {r["kernel"] for r in rows} == _all_kernels()
    assert not _problems(rows), "\n".join(_problems(rows))


# --------------------------------------------------------------------------------------------------------------
# Plans and precision (no compiler needed)


def _window_launches(dtype: torch.dtype, arch: int, n_side: int = 8) -> list[_plans.Launch]:
    module = importlib.import_module("ops.window_attention.triton")
    q = torch.empty(2, 2 * n_side, 2 * n_side, 3, 32, device="meta", dtype=dtype)
    with _plans.compile_target(arch) as launches:
        module._forward(q, q, q, n_side, n_side, None, None, 0.1)
    return launches


@pytest.mark.parametrize("setting, expected", [("highest", "ieee"), ("high", "tf32"), ("medium", "tf32")])
def test_fp32_dot_precision_follows_torch(setting, expected):
    """fp32 inputs: TF32 dots exactly when torch's matmuls may use TF32; the launched constexpr says so."""
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(setting)
        assert _plans.fp32_dot_precision() == expected
        assert _plans.exact_fp32(torch.float32) == (expected == "ieee")
        (launch,) = _window_launches(torch.float32, 90)
        assert launch.constexprs["DOT_PRECISION"] == expected
        # 16-bit inputs: the flag only concerns fp32 operands a kernel forms itself.
        assert _plans.dot_options(torch.bfloat16, _plans.GPU_TARGETS[90]) == (False, "tf32")
        assert not _plans.exact_fp32(torch.bfloat16)
    finally:
        torch.set_float32_matmul_precision(saved)


def test_bf16_upcast_only_in_the_interpreter():
    assert _plans.dot_options(torch.bfloat16, _plans.INTERPRETER) == (True, "tf32")
    (launch,) = _window_launches(torch.bfloat16, 80)
    assert launch.constexprs["UPCAST_DOT"] is False


def test_compile_target_records_instead_of_launching():
    """Inside compile_target the wrappers plan for the GPU (its SM count sizes the grid) and nothing runs: the
    meta tensors would make any launch fail."""
    launches = _window_launches(torch.float16, 90)
    assert [launch.kernel.__name__ if hasattr(launch.kernel, "__name__") else launch.kernel.fn.__name__
            for launch in launches] == ["window_attention_fwd_kernel"]
    assert launches[0].plan == _plans.KernelPlan(8, 1)  # an 8 x 8 window: one 64 x 64 tile (8 warps), no loop
    assert _plans.device_target(torch.device("cpu")) == _plans.INTERPRETER


def test_exact_fp32_plans_shrink_the_window_backward():
    """HAT's 16 x 16 windows with a bias gradient: the backward's (64, 32) tiles with tensor-core dots (the
    whole-window (256, 16) tiles spill 1 KB in bf16 on sm_80), (64, 16) with FMA dots (exact fp32), 8 warps; the
    interpreter keeps the tested tiles."""
    module = importlib.import_module("ops.window_attention.triton")
    saved = torch.get_float32_matmul_precision()
    try:
        for setting, blocks in (("highest", (64, 16)), ("high", (64, 32))):
            torch.set_float32_matmul_precision(setting)
            plan = module.launch_plan(_plans.GPU_TARGETS[90], torch.float32, 30, 256, 64, 6, True)
            assert plan.bwd_blocks == blocks and plan.bwd == _plans.KernelPlan(8, 1)
        plan = module.launch_plan(_plans.INTERPRETER, torch.float32, 30, 256, 64, 6, True)
        assert plan.bwd_blocks == (256, 16)
    finally:
        torch.set_float32_matmul_precision(saved)


def test_agent_backward_tiles_fit_every_gpu():
    """Agent-DeiT's stage 2 (196 agents as keys): the interpreter keeps them in one 256-key tile (the tested
    single-tile path); GPU plans stream them in (32, 32) tiles at 4 warps in 16-bit / TF32, (32, 64) at 8 warps in
    exact fp32 (the tiles that spill 0 B, <= 28 B in exact fp32). Stage 1 (agents over 3,136 tokens) runs
    key-parallel: 32 keys per program at 8 warps in 16-bit, 16 in fp32."""
    module = importlib.import_module("ops.agent_attention.triton")
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert module.launch_plan(_plans.INTERPRETER, torch.float32, 64, 197, 196, 24).bwd_blocks == (32, 256)
        for arch in (80, 86, 90):
            target = _plans.GPU_TARGETS[arch]
            for dtype, blocks, warps in ((torch.float32, (32, 64), 8), (torch.bfloat16, (32, 32), 4)):
                plan = module.launch_plan(target, dtype, 64, 197, 196, 24)
                assert (plan.key_parallel, plan.bwd_blocks, plan.bwd.num_warps) == (False, blocks, warps)
            for dtype, keys in ((torch.float32, 16), (torch.bfloat16, 32)):
                plan = module.launch_plan(target, dtype, 32, 49, 3136, 2)
                assert (plan.key_parallel, plan.bwd_blocks, plan.bwd.num_warps) == (True, (64, keys), 8)
                # Agent-PVT-L's seg recipe: 784 agents, at most 64 per tile.
                plan = module.launch_plan(target, dtype, 64, 784, 16384, 2)
                assert (plan.key_parallel, plan.bwd_blocks, plan.bwd.num_warps) == (True, (64, keys), 8)
        torch.set_float32_matmul_precision("high")
        plan = module.launch_plan(_plans.GPU_TARGETS[86], torch.float32, 64, 197, 196, 24)
        assert (plan.bwd_blocks, plan.bwd.num_warps) == ((32, 32), 4)
    finally:
        torch.set_float32_matmul_precision(saved)


def test_window_plans_at_head_dim_128():
    """BiFormer-B / STL's whole-map stage 4 (head_dim 96, D = 128): the head_dim <= 64 tiles would need 229-295 KB
    of shared memory in TF32 and spill 10-17 KB in exact fp32 (sm_80); smaller tiles at D = 128, the interpreter
    unchanged."""
    module = importlib.import_module("ops.window_attention.triton")
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        for arch in (80, 86, 90):
            target = _plans.GPU_TARGETS[arch]
            exact = module.launch_plan(target, torch.float32, 96, 49, 8, 8, False)
            assert (exact.fwd_blocks, exact.bwd_blocks, exact.dq_blocks) == ((32, 64), (64, 16), (16, 64))
            assert exact.fwd.num_warps == exact.bwd.num_warps == exact.dq.num_warps == 8
            half = module.launch_plan(target, torch.bfloat16, 96, 256, 8, 8, False)
            assert (half.fwd_blocks, half.bwd_blocks, half.dq_blocks) == ((16, 64), (32, 16), (16, 64))
            # head_dim 64 keeps its plan.
            assert module.launch_plan(target, torch.bfloat16, 64, 49, 8, 8, False).fwd_blocks == (64, 64)
        assert module.launch_plan(_plans.INTERPRETER, torch.float32, 96, 49, 8, 8, False).fwd_blocks == (64, 64)
    finally:
        torch.set_float32_matmul_precision(saved)


def test_window_grid_exact_fp32_forward_at_16_warps():
    """EMOv2's whole-group key tile with FMA dots: 16 warps (8 spill 4.1-5.4 KB at the 10 x 10 seg windows)."""
    module = importlib.import_module("ops.window_grid_attention.triton")
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert module.launch_plan(_plans.GPU_TARGETS[80], torch.float32, 32, 128, 100).fwd.num_warps == 16
        assert module.launch_plan(_plans.GPU_TARGETS[80], torch.bfloat16, 32, 128, 100).fwd.num_warps == 8
        assert module.launch_plan(_plans.INTERPRETER, torch.float32, 32, 128, 100).fwd.num_warps != 16
    finally:
        torch.set_float32_matmul_precision(saved)
