"""Compile every Triton kernel ahead of time for a GPU, on a machine without one, as the wrappers would launch it.

Three steps, each reusing the real code rather than a copy of it:

1. **Calls.** Zoo models run forward and backward on the meta device with ``backend='triton'``; a
   ``TorchDispatchMode`` records every ``attnzoo::*`` custom-op call (the forward and backward ops of
   :mod:`ops._custom_op`) with its meta-tensor arguments. On meta tensors the ops run their fake implementations, so
   this costs no memory and no kernel. Shapes come from every registered model at its default input size
   (:func:`default_sources`) and from the recipes (:func:`recipe_sources`: ``configs/cls`` at their image size,
   ``configs/seg`` backbones at their crop and at 512 x 683 whole-image inference, ``configs/sr`` at their LR
   patch size).
2. **Launches.** Each distinct call is replayed through the op's own Python forward / backward (the function the
   custom op wraps) inside :func:`ops._plans.compile_target`: the wrappers plan for the chosen GPU and
   :func:`ops._plans.launch` records each launch (kernel, arguments, constexprs, warps, stages).
3. **Compiles.** Each distinct launch is specialised by Triton's own binder for the target (the signature and
   ``tt.divisibility`` attributes a real launch would get), compiled with ``triton.compile`` for
   ``GPUTarget("cuda", arch, 32)``, and measured: ``metadata.shared`` (what Triton compares with the device's
   limit before it launches: ``OutOfResources`` above it) and the ``ptxas -v`` register / spill report of the
   bundled ptxas. Compiles land in Triton's cache; ptxas reports are cached next to it by kernel hash.

**The record** (``RECORD``, ``benchmarks/results/compile_check.json``): the measured numbers of every compiled
version, keyed by Triton's own cache hash of the compile (the kernel's source and everything it calls, the
signature and specialisations, constexprs, options such as warps and stages, the target and its ptxas version,
and Triton's own version), so a version whose hash is in the record is exactly the compile that was measured.
With ``--record`` a version found there takes its numbers from the record and every other version is compiled:
a changed kernel, plan or shape, or another Triton, is compiled afresh. ``--verify N`` compiles N recorded
versions per dtype, drawn at random each run, and reports any whose numbers differ from the record. ``--update-record``
writes the numbers of this run's versions into the record (a full run, every model and recipe without a
``--kernels`` / ``--models`` filter, also drops the versions no longer met for its targets and dtypes).

Run: ``python -m benchmarks.compile_check --arch 90 --dtypes bf16,fp32 [--models NAME ...] [--recipes] [--kernels PART
...] [--json OUT] [--record [--verify N] [--update-record]] [--jobs N]``. ``--count-keys SEG_CONFIG ...``
compiles nothing: it counts the kernel versions whole-image inference of those seg configs' backbones would
compile over ``--image-sizes`` (:func:`compile_keys`).
This module must run in a process where ``TRITON_INTERPRET`` was unset when triton was imported (the kernels are
then ``JITFunction``s, which ``triton.compile`` needs); ``tests/ops/test_compile.py`` runs it as a subprocess.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ops import _plans

__all__ = [
    "DTYPES", "RECORD", "Source", "SPILL_BOUND", "collect_calls", "compile_keys", "compile_launch", "default_sources",
    "launches_for", "load_record", "recipe_sources", "run", "seg_source", "update_record", "version_hash",
]

REPO = Path(__file__).resolve().parent.parent
OPS = ("agent_attention", "bilevel_routing_attention", "channel_attention", "hilo_attention",
       "neighborhood_attention", "overlapping_window_attention", "rala", "window_attention", "window_grid_attention")

# Input dtype and torch.get_float32_matmul_precision() of each checked precision: "fp32" is exact fp32 (IEEE dots,
# torch's default "highest"), "tf32" fp32 inputs with TF32 dots ("high").
DTYPES = {
    "fp32": (torch.float32, "highest"),
    "tf32": (torch.float32, "high"),
    "fp16": (torch.float16, "highest"),
    "bf16": (torch.bfloat16, "highest"),
}

# Spill bounds the compile tier asserts, bytes of spill stores per thread (ptxas -v), per checked precision. The
# aim is 0 everywhere. The plans of 2026-12-08 reach, over every kernel version of every model and recipe on sm_80
# and sm_90 (benchmarks/results/compile_check_2026-12-08.md): bf16 / fp16 704 B (EMOv2's window-grid backward at
# its 10 x 10 seg windows, sm_80; 46 of 296 versions spill on sm_80, 21 of 298 on sm_90), TF32 460 B, exact fp32
# (IEEE / FMA dots) 3.2 KB (window-grid forward).
SPILL_BOUND = {"fp16": 1024, "bf16": 1024, "tf32": 2048, "fp32": 4096}

# Segmentation whole-image inference on ADE20K: the short side resized to 512 (512 x 683 for a 3:4 image).
SEG_WHOLE_IMAGE = (512, 683)

# The measured numbers of every compiled version, keyed by Triton's cache hash (see the module docstring).
RECORD = REPO / "benchmarks" / "results" / "compile_check.json"
_MEASURES = ("shared", "regs", "spill_stores", "spill_loads", "stack")


@dataclasses.dataclass(frozen=True)
class Source:
    """One model run that produces op calls: a timm model name, its keyword arguments, the input (C, H, W),
    and whether it runs as a backbone (``forward_intermediates``, as the segmentation integration does)."""

    model: str
    input_size: tuple[int, int, int]
    kwargs: tuple = ()
    backbone: bool = False

    def __str__(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.kwargs)
        return f"{self.model}@{self.input_size[1]}x{self.input_size[2]}{extra}{' backbone' if self.backbone else ''}"


# --------------------------------------------------------------------------------------------------------------
# 1. Calls


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def default_sources() -> list[Source]:
    """Every registered zoo model at its default (pretrained_cfg) input size."""
    import timm

    import zoo.models

    sources = []
    for name in zoo.models.list_models():
        cfg = timm.models.get_pretrained_cfg(name)
        size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
        sources.append(Source(name, size))
    return sources


def recipe_sources() -> list[Source]:
    """The recipes' sizes: ``configs/cls`` models at their ``img_size``, ``configs/sr`` at their LR patch size,
    ``configs/seg`` backbones (with their ``model_kwargs``) at their crop and at 512 x 683 (whole-image test)."""
    from zoo.engine.config import load_recipe

    sources = []
    for path in sorted((REPO / "configs" / "cls").glob("*.yaml")) + sorted((REPO / "configs" / "sr").glob("*.yaml")):
        recipe = load_recipe(path)
        if recipe.task == "sr":
            lq = recipe.sr.gt_size // recipe.sr.scale
            size = (3, lq, lq)
        else:
            size = (3, recipe.data.img_size, recipe.data.img_size)
        sources.append(Source(recipe.model.name, size, _freeze(recipe.model.kwargs)))
    try:
        from mmengine.config import Config
    except ImportError:  # mmsegmentation's stack not installed: cls / sr recipes only
        return sources
    for path in sorted((REPO / "configs" / "seg").glob("*/*.py")):
        if path.parent.name == "_base_" or path.parent.name == "demo":
            continue
        cfg = Config.fromfile(str(path))
        backbone = cfg.model.backbone
        crop = tuple(cfg.get("crop_size", (512, 512)))
        kwargs = _freeze(dict(backbone.get("model_kwargs", {}) or {}))
        for hw in {crop, SEG_WHOLE_IMAGE}:
            sources.append(Source(backbone.model_name, (3, *hw), kwargs, backbone=True))
    return sources


class _Recorder(TorchDispatchMode):
    """Records every ``attnzoo::*`` custom-op call (name, arguments) that runs under it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("attnzoo::"):
            self.calls.append((name, args))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def meta_triton() -> Iterator[None]:
    """The ops' Triton backend for meta tensors: its custom ops run their fake implementations (shapes only, what
    the compile check records and what the memory benchmark counts as the zoo's)."""
    # backend='triton' accepts non-CUDA tensors only under the interpreter flag; on meta tensors the custom ops
    # run their fake implementations, so nothing is interpreted. The flag is read per call (ops._backend), and
    # triton itself was imported without it.
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from ops._backend import use_backend

        with use_backend("triton"):
            yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def seg_source(config: str | Path, hw: tuple[int, int]) -> Source:
    """The backbone of segmentation config ``config`` (with its ``model_kwargs``) on an ``hw`` image."""
    from mmengine.config import Config

    backbone = Config.fromfile(str(config)).model.backbone
    return Source(backbone.model_name, (3, *hw), _freeze(dict(backbone.get("model_kwargs", {}) or {})),
                  backbone=True)


def collect_calls(source: Source, dtype: torch.dtype, batch: int = 2, *, backward: bool = True
                  ) -> list[tuple[str, tuple]]:
    """The ``attnzoo::*`` op calls (name, meta-tensor arguments) of one forward + backward of ``source`` (forward
    only, in eval mode, without ``backward``: inference)."""
    import timm

    import zoo.models  # noqa: F401  (registers the models)

    _op_functions()  # the kernels' modules are imported (as JITFunctions) before the interpreter flag goes on
    with torch.device("meta"):
        model = timm.create_model(source.model, pretrained=False, **dict(source.kwargs))
    model = model.to(dtype).train(backward)
    x = torch.empty(batch, *source.input_size, device="meta", dtype=dtype)
    recorder = _Recorder()
    with meta_triton(), recorder, torch.set_grad_enabled(backward):
        if source.backbone:
            outs = model.forward_intermediates(x, intermediates_only=True)
            loss = sum(o.float().sum() for o in outs)
        else:
            loss = model(x).float().sum()
        if backward:
            loss.backward()
    return recorder.calls


def _to_dtype(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        return torch.empty_strided(value.shape, value.stride(), dtype=dtype, device=value.device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_dtype(v, dtype) for v in value)
    return value


def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), tuple(value.stride()), str(value.dtype), value.storage_offset())
    if isinstance(value, (list, tuple)):
        return tuple(_spec(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------------------------
# 2. Launches


@functools.lru_cache(maxsize=None)
def _op_functions() -> dict[str, Any]:
    """``attnzoo::<name>_fwd`` / ``_bwd`` -> the Python forward / backward each op's Triton module registers."""
    table = {}
    for op in OPS:
        module = importlib.import_module(f"ops.{op}.triton")
        for value in vars(module).values():
            qualname = getattr(value, "_qualname", None)
            if isinstance(qualname, str) and qualname.startswith("attnzoo::"):
                table[qualname] = module._forward if qualname.endswith("_fwd") else module._backward
    return table


def launches_for(name: str, args: tuple, arch: int) -> list[_plans.Launch]:
    """The launches the op's wrapper makes for these arguments when planning for GPU ``arch``."""
    function = _op_functions()[name]
    with _plans.compile_target(arch) as launches:
        function(*args)
    return launches


# --------------------------------------------------------------------------------------------------------------
# 3. Compiles


_PTXAS_RE = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def _parse_ptxas(log: str) -> dict[str, int] | None:
    if "Used" not in log:
        return None
    return {key: int(m.group(1)) if (m := rx.search(log)) else 0 for key, rx in _PTXAS_RE.items()}


def _ptxas_report(compiled, arch: int, log: str) -> dict[str, int]:
    """ptxas -v's registers and spills of ``compiled``: from the compile's own log, a cached report, or a ptxas
    run on its PTX (when Triton's cache answered the compile)."""
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    cache = Path(knobs.cache.dir) / "attnzoo_ptxas" / f"{compiled.hash}.json"
    report = _parse_ptxas(log)
    if report is None and cache.exists():
        return json.loads(cache.read_text())
    if report is None:
        with tempfile.TemporaryDirectory() as tmp:
            ptx = Path(tmp) / "k.ptx"
            ptx.write_text(compiled.asm["ptx"])
            result = subprocess.run(
                [get_ptxas(arch).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(arch)}",
                 str(ptx), "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True, check=True)
        report = _parse_ptxas(result.stderr + result.stdout)
        if report is None:
            raise RuntimeError(f"ptxas -v printed no resource usage:\n{result.stderr}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(report))
    return report


def _jit_function(kernel):
    """The kernel as a ``JITFunction``: in a process that imported triton under ``TRITON_INTERPRET=1`` (the test
    tier) it is an ``InterpretedFunction`` made from the same function and ``@triton.jit`` options."""
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn, **kernel.kwargs)


def _kernel_key(launch: _plans.Launch, arch: int):
    """(kernel, signature, constexprs, attrs, options) exactly as Triton's launcher would specialise it."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = _jit_function(launch.kernel)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(launch.constexprs, num_warps=launch.plan.num_warps, num_stages=launch.plan.num_stages)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return options, signature, constexprs, attrs


def version_hash(launch: _plans.Launch, arch: int) -> str:
    """Triton's cache hash of compiling ``launch`` for ``arch`` (``CompiledKernel.hash``), computed without
    compiling: what :func:`triton.compile` hashes to find a compile in its cache."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.compiler.compiler import get_cache_key
    from triton._C.libtriton import get_cache_invalidating_env_vars

    options, signature, constexprs, attrs = _kernel_key(launch, arch)
    src = ASTSource(launch.kernel, signature, constexprs, attrs)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    parsed = backend.parse_options(dict(options.__dict__, **src.parse_options()))
    key = get_cache_key(src, backend, parsed, env_vars=get_cache_invalidating_env_vars())
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def compile_launch(launch: _plans.Launch, arch: int) -> dict[str, Any]:
    """Compile one recorded launch for ``arch``; shared memory (bytes), registers and spills per thread, and
    Triton's hash of the compile."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options, signature, constexprs, attrs = _kernel_key(launch, arch)
    log = io.StringIO()
    knobs.nvidia.dump_ptxas_log = True
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs),
                                      target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    finally:
        knobs.nvidia.dump_ptxas_log = False
    return dict(shared=compiled.metadata.shared, hash=compiled.hash, **_ptxas_report(compiled, arch, log.getvalue()))


# Launches to compile, set before the worker processes fork (they inherit it; a Launch holds meta tensors and
# kernels, which do not pickle).
_PENDING: list[tuple[_plans.Launch, int]] = []


def _compile_pending(index: int) -> dict[str, Any]:
    start = time.perf_counter()
    result = compile_launch(*_PENDING[index])
    return dict(result, seconds=round(time.perf_counter() - start, 2))


def _compile_all(pending: list[tuple[_plans.Launch, int]], jobs: int) -> Iterator[dict[str, Any]]:
    """Compile ``pending`` in order, in ``jobs`` forked processes (ptxas and LLVM run one thread each)."""
    global _PENDING
    _PENDING = pending
    try:
        if jobs <= 1 or len(pending) <= 1:
            yield from map(_compile_pending, range(len(pending)))
            return
        with multiprocessing.get_context("fork").Pool(min(jobs, len(pending))) as pool:
            yield from pool.imap(_compile_pending, range(len(pending)))
    finally:
        _PENDING = []


def load_record(path: Path = RECORD) -> dict[str, dict[str, Any]]:
    """Triton hash -> the recorded row (kernel, arch, dtype and the measures)."""
    return json.loads(path.read_text())["versions"] if path.exists() else {}


def update_record(rows: list[dict[str, Any]], path: Path = RECORD, *, prune: bool = False) -> None:
    """Write the rows' numbers into the record; ``prune``: drop its versions of the rows' targets and dtypes that
    the rows do not contain (a full run: versions no longer launched)."""
    import triton

    versions = load_record(path)
    if prune:
        checked = {(row["arch"], row["dtype"]) for row in rows}
        versions = {h: v for h, v in versions.items() if (v["arch"], v["dtype"]) not in checked}
    for row in rows:
        versions[row["hash"]] = dict(kernel=row["kernel"], arch=row["arch"], dtype=row["dtype"],
                                     **{m: row[m] for m in _MEASURES})
    lines = ",\n".join(f"  {json.dumps(h)}: {json.dumps(v)}" for h, v in sorted(versions.items()))
    path.write_text(f'{{"triton": {json.dumps(triton.__version__)}, "versions": {{\n{lines}\n}}}}\n')


def compile_keys(sources: Iterable[Source], arch: int = 90, dtype: str = "fp16", *, backward: bool = False
                 ) -> dict[str, list[str]]:
    """Kernel name -> the distinct compiled versions (Triton cache keys: constexprs, the binder's integer and
    pointer specialisations, warps and stages) that ``sources`` launch on ``arch``: how many kernels a run over
    these sources compiles. Nothing is compiled."""
    torch_dtype, precision = DTYPES[dtype]
    saved = torch.get_float32_matmul_precision()
    keys: dict[str, set[str]] = {}
    try:
        torch.set_float32_matmul_precision(precision)
        for source in sources:
            for name, args in collect_calls(source, torch_dtype, batch=1, backward=backward):
                for launch in launches_for(name, args, arch):
                    _, signature, constexprs, attrs = _kernel_key(launch, arch)
                    key = repr((sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items()),
                                launch.plan))
                    keys.setdefault(launch.kernel.fn.__name__, set()).add(key)
    finally:
        torch.set_float32_matmul_precision(saved)
    return {name: sorted(found) for name, found in keys.items()}


def _constexpr_summary(launch: _plans.Launch) -> str:
    keep = {k: v for k, v in launch.constexprs.items() if k.isupper() and k not in ("UPCAST_DOT",)}
    return ",".join(f"{k}={v}" for k, v in keep.items())


def run(sources: Iterable[Source], archs: Iterable[int], dtypes: Iterable[str], *, per_kernel: int | None = None,
        kernels: Iterable[str] | None = None, log: Any = None, record: dict[str, dict[str, Any]] | None = None,
        verify: int = 0, jobs: int = 1) -> list[dict[str, Any]]:
    """Collect, replay and compile; one row per distinct compiled kernel version (per arch and dtype label).

    ``per_kernel``: compile at most this many versions of each kernel per (arch, dtype) -- the first versions met,
    in source order. ``kernels``: compile only kernels whose name contains one of these strings (a quick look at a
    few kernels while tuning their plans). ``record``: :func:`load_record`'s table; a version whose hash is in it
    takes the recorded numbers (``row["recorded"]``) instead of a compile, and ``verify`` of those per dtype,
    drawn at random, are compiled too (``row["verified"]``: the fresh numbers equal the record's; the fresh ones
    are kept).
    ``jobs``: compile in this many processes.
    """
    wanted = tuple(kernels) if kernels else None
    sources, archs, dtypes = list(sources), list(archs), list(dtypes)
    saved_precision = torch.get_float32_matmul_precision()
    rows: dict[tuple, dict[str, Any]] = {}
    pending: list[tuple[dict[str, Any], _plans.Launch, int]] = []
    counts: dict[tuple, int] = {}
    # The models run once, in fp16: every fp16 tensor of a call is then the model's dtype (the ops' saved
    # statistics are fp32) and becomes each checked dtype in turn.
    fp16_calls: dict[Any, tuple[str, tuple, str]] = {}
    for source in dict.fromkeys(sources):
        for name, args in collect_calls(source, torch.float16):
            fp16_calls.setdefault((name, _spec(args)), (name, args, str(source)))
    try:
        for label in dtypes:
            dtype, precision = DTYPES[label]
            torch.set_float32_matmul_precision(precision)
            calls = [(name, _to_dtype(args, dtype), origin) for name, args, origin in fp16_calls.values()]
            for arch in archs:
                for name, args, origin in calls:
                    for launch in launches_for(name, args, arch):
                        kname = launch.kernel.fn.__name__
                        if wanted is not None and not any(part in kname for part in wanted):
                            continue
                        options, signature, constexprs, attrs = _kernel_key(launch, arch)
                        key = (arch, label, kname, _freeze(signature), repr(sorted(constexprs.items())),
                               repr(sorted(attrs.items())), launch.plan)
                        if key in rows:
                            rows[key]["sources"].add(origin)
                            continue
                        if per_kernel is not None and counts.get((arch, label, kname), 0) >= per_kernel:
                            continue
                        counts[(arch, label, kname)] = counts.get((arch, label, kname), 0) + 1
                        row = dict(arch=arch, dtype=label, op=name.split("::")[1].rsplit("_", 1)[0], kernel=kname,
                                   config=_constexpr_summary(launch), num_warps=launch.plan.num_warps,
                                   num_stages=launch.plan.num_stages, smem_limit=_plans.GPU_TARGETS[arch].smem,
                                   sources={origin}, hash=version_hash(launch, arch), recorded=False)
                        rows[key] = row
                        pending.append((row, launch, arch))
            # Compiled with this dtype's matmul precision still set (the launches carry it as a constexpr; the
            # setting only matters for planning, but keep the two in step).
            _measure(pending, record, verify, jobs, log)
            pending = []
    finally:
        torch.set_float32_matmul_precision(saved_precision)
    out = list(rows.values())
    for row in out:
        row["sources"] = sorted(row["sources"])
    return out


def _measure(pending: list[tuple[dict[str, Any], _plans.Launch, int]], record: dict[str, dict[str, Any]] | None,
             verify: int, jobs: int, log: Any) -> None:
    """Fill the pending rows' measures from the record or by compiling them (see :func:`run`)."""
    record = record or {}
    recorded = [entry for entry in pending if entry[0]["hash"] in record]
    for row, _, _ in recorded:
        row.update({m: record[row["hash"]][m] for m in _MEASURES}, recorded=True, seconds=0.0)
    checks = random.sample(recorded, min(verify, len(recorded)))
    fresh = [entry for entry in pending if entry[0]["hash"] not in record] + checks
    for (row, _, _), result in zip(fresh, _compile_all([(launch, arch) for _, launch, arch in fresh], jobs)):
        if result["hash"] != row["hash"]:
            raise RuntimeError(f"{row['kernel']}: version_hash() computed {row['hash']}, the compile hashed "
                               f"{result['hash']}: the record's keys would not match its compiles")
        if row["recorded"]:
            row["verified"] = all(result[m] == row[m] for m in _MEASURES)
        row.update(result)
        if log is not None:
            print(_format_row(row), file=log, flush=True)


def _format_row(row: dict[str, Any]) -> str:
    flag = " OVER" if row["shared"] > row["smem_limit"] else ""
    flag += " SPILL" if row["spill_stores"] > 0 else ""
    flag += {True: " VERIFIED", False: " DIFFERS FROM THE RECORD"}.get(row.get("verified"), "")
    return (f"sm_{row['arch']} {row['dtype']} {row['kernel']} [{row['config']}] w{row['num_warps']} "
            f"s{row['num_stages']}: smem {row['shared']} regs {row['regs']} spill {row['spill_stores']}"
            f"{flag} ({row['seconds']} s)")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts: kernel versions, over the target's shared memory, spilling (per arch and dtype)."""
    out: dict[str, Any] = {}
    for row in rows:
        entry = out.setdefault(f"sm_{row['arch']} {row['dtype']}",
                               dict(versions=0, recorded=0, over_smem=0, spilling=0))
        entry["versions"] += 1
        entry["recorded"] += row["recorded"]
        entry["over_smem"] += row["shared"] > row["smem_limit"]
        entry["spilling"] += row["spill_stores"] > 0
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(_plans.GPU_TARGETS))
    parser.add_argument("--dtypes", default="fp32,tf32,fp16,bf16")
    parser.add_argument("--models", nargs="*", help="model names at their default size (default: every model)")
    parser.add_argument("--size", type=int, nargs=2, help="input H W for --models instead of their default")
    parser.add_argument("--recipes", action="store_true", help="also every recipe's sizes")
    parser.add_argument("--per-kernel", type=int, help="at most this many versions per kernel, arch and dtype")
    parser.add_argument("--kernels", nargs="*", help="only kernels whose name contains one of these")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--count-keys", nargs="+", metavar="SEG_CONFIG",
                        help="instead of compiling: print (JSON) how many versions of each kernel whole-image "
                             "inference of these seg configs' backbones compiles over --image-sizes")
    parser.add_argument("--image-sizes", nargs="+", default=["512x683", "512x512", "640x853", "480x640", "384x1024"],
                        help="HxW image sizes for --count-keys")
    parser.add_argument("--record", nargs="?", const=str(RECORD), metavar="FILE",
                        help=f"take the numbers of versions found in this record instead of compiling them "
                             f"(default {RECORD.relative_to(REPO)})")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="with --record: also compile N recorded versions per dtype, drawn at random, and compare")
    parser.add_argument("--update-record", action="store_true",
                        help="write this run's numbers into the record (--record's file or the default)")
    parser.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the compile check needs triton's compiler, not its "
                         "interpreter")
    if args.count_keys:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.image_sizes]
        counts = {}
        for config in args.count_keys:
            keys = compile_keys([seg_source(config, hw) for hw in sizes], (args.arch or [90])[0])
            counts[config] = {name: len(found) for name, found in sorted(keys.items())}
        print(json.dumps(counts, indent=1))
        return
    sources = default_sources()
    if args.models:
        sources = [s for s in sources if s.model in args.models]
        if args.size:
            sources = [dataclasses.replace(s, input_size=(3, *args.size)) for s in sources]
    if args.recipes:
        sources += recipe_sources()
    record_path = Path(args.record) if args.record else RECORD
    rows = run(sources, args.arch or [90], args.dtypes.split(","), per_kernel=args.per_kernel,
               kernels=args.kernels, log=None if args.quiet else sys.stderr,
               record=load_record(record_path) if args.record else None, verify=args.verify, jobs=args.jobs)
    if args.update_record:
        full = args.recipes and not args.models and not args.kernels and args.per_kernel is None
        update_record(rows, record_path, prune=full)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=rows, summary=summary(rows)), indent=1))
    for key, entry in summary(rows).items():
        print(f"{key}: {entry['versions']} kernel versions ({entry['recorded']} from the record), "
              f"{entry['over_smem']} over the shared-memory limit, {entry['spilling']} spilling")


if __name__ == "__main__":
    main()
