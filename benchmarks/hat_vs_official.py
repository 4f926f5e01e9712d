"""HAT forward, zoo against the official architecture, side by side: same weights, same input, output error and time.

    python benchmarks/hat_vs_official.py --official PATH/TO/XPixelGroup/HAT --model hat_s_x2 --lr-size 64 [--iters 3]
        [--threads 1] [--device cpu|cuda] [--json FILE]

The official ``hat/archs/hat_arch.py`` is imported at run time from the user's checkout of XPixelGroup/HAT (nothing
of it is in this repository); the three BasicSR names it imports (``ARCH_REGISTRY``, ``to_2tuple``,
``trunc_normal_``) are stubbed so BasicSR need not be installed. Random official weights (seed 0) go into the zoo
model through ``checkpoint_filter_fn`` (``params_ema``, strict), so both compute with identical parameters. Prints
the median forward time of each (``no_grad``, fp32) and the relative L2 / max absolute difference of the outputs.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/NAME.py): the repository root first, not benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import Timer, run_meta, write_json  # noqa: E402

# the official constructor arguments of each size (XPixelGroup/HAT options/test/*.yml)
OFFICIAL_ARGS = {
    "hat_s": dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24),
    "hat": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30),
    "hat_l": dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, compress_ratio=3, squeeze_factor=30),
}


def load_official_hat(repo: Path):
    """The official ``HAT`` class from a checkout of XPixelGroup/HAT, with BasicSR's three names stubbed."""
    arch = repo / "hat" / "archs" / "hat_arch.py"
    if not arch.is_file():
        raise FileNotFoundError(f"{arch} does not exist; --official must be a checkout of XPixelGroup/HAT")
    from timm.layers import to_2tuple
    from torch.nn.init import trunc_normal_

    registry = types.SimpleNamespace(register=lambda obj=None: obj if obj is not None else (lambda o: o))
    stubs = {
        "basicsr": types.ModuleType("basicsr"), "basicsr.utils": types.ModuleType("basicsr.utils"),
        "basicsr.utils.registry": types.ModuleType("basicsr.utils.registry"),
        "basicsr.archs": types.ModuleType("basicsr.archs"),
        "basicsr.archs.arch_util": types.ModuleType("basicsr.archs.arch_util"),
    }
    stubs["basicsr.utils.registry"].ARCH_REGISTRY = registry
    stubs["basicsr.archs.arch_util"].to_2tuple = to_2tuple
    stubs["basicsr.archs.arch_util"].trunc_normal_ = trunc_normal_
    for name, module in stubs.items():
        sys.modules.setdefault(name, module)
    spec = importlib.util.spec_from_file_location("official_hat_arch", arch)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HAT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hat_vs_official.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--official", type=Path, required=True, help="a checkout of github.com/XPixelGroup/HAT")
    p.add_argument("--model", default="hat_s_x2", help="zoo HAT model: hat_s_x2 ... hat_l_x4")
    p.add_argument("--lr-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    size_name, _, scale = args.model.rpartition("_x")
    if size_name not in OFFICIAL_ARGS or scale not in ("2", "3", "4"):
        p.error(f"--model {args.model!r}: expected hat_s_x{{2,3,4}}, hat_x{{2,3,4}} or hat_l_x{{2,3,4}}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import timm

    import zoo  # noqa: F401  (registers the zoo models)
    from zoo.models.hat import checkpoint_filter_fn

    official_cls = load_official_hat(args.official)
    torch.manual_seed(0)
    official = official_cls(upscale=int(scale), in_chans=3, img_size=64, window_size=16, conv_scale=0.01,
                            overlap_ratio=0.5, img_range=1.0, mlp_ratio=2, upsampler="pixelshuffle",
                            resi_connection="1conv", **OFFICIAL_ARGS[size_name]).eval().to(device)
    ours = timm.create_model(args.model).eval().to(device)
    ours.load_state_dict(checkpoint_filter_fn({"params_ema": official.state_dict()}, ours), strict=True)
    x = torch.rand(1, 3, args.lr_size, args.lr_size, device=device)
    rows, outputs = [], {}
    for name, model in (("official", official), ("zoo", ours)):
        def forward(model=model, name=name):
            with torch.no_grad():
                outputs[name] = model(x)
        t = Timer(device, args.warmup, args.iters).measure(forward)
        rows.append({"impl": name, "s_per_forward": t.median_ms / 1e3, "peak_mem_mb": t.peak_mib})
    diff = (outputs["zoo"] - outputs["official"]).double()
    err = {"rel_l2": (diff.norm() / outputs["official"].double().norm()).item(), "max_abs": diff.abs().max().item()}
    for r in rows:
        print(f"{r['impl']:>9}: {r['s_per_forward']:.3f} s / forward"
              + (f", peak {r['peak_mem_mb']:.0f} MiB" if r["peak_mem_mb"] is not None else ""))
    print(f"zoo / official time: {rows[1]['s_per_forward'] / rows[0]['s_per_forward']:.2f}; "
          f"output rel. L2 error {err['rel_l2']:.2e}, max abs {err['max_abs']:.2e}")
    if args.json:
        meta = run_meta(device, argv, what="HAT forward vs official")
        write_json(args.json, dict(meta=meta, model=args.model, lr_size=args.lr_size, iters=args.iters,
                                   threads=torch.get_num_threads(), rows=rows, error=err))
    return 0 if err["rel_l2"] < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
