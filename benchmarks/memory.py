"""Activation memory of one training step, counted without a GPU: official formulation vs zoo, per family.

One step = forward of a batch, ``loss = mean(output^2)`` in fp32, backward (no optimizer step). The model is built
on the **meta device** (no memory, no compute: every op returns a tensor of the right shape, dtype and strides), so
a 1024 x 1024 step costs seconds on the CPU, and the counts do not depend on a device or an allocator. Two counts:

* **saved for backward**: the bytes of every tensor autograd saves for the backward (``saved_tensors_hooks``),
  deduplicated by storage (a saved view keeps its whole storage alive, so the storage's bytes count, once).
* **peak live**: a ``TorchDispatchMode`` sees every tensor an op returns; a storage that no tensor of the step
  owned before is an allocation of its bytes, and it is freed when its last reference goes (a weak-reference
  finaliser on the storage: PyTorch keeps one Python object per storage while the storage lives). The peak of
  the running sum over the forward and the backward is the number reported: the memory a perfect allocator
  would need, without the caching allocator's rounding and fragmentation.

Excluded from both: the weights and buffers, the parameters' gradients (the storages that end the step as a
``.grad``; their temporaries during accumulation count), the input image, and constants cached per geometry
(index tables that the official code keeps as buffers: one uncounted warm-up step builds them first). Included:
every activation, the ops' saved statistics (log-sum-exps, routing indices), the gradients of activations during
the backward.

Formulations (``FORMULATIONS``): ``official`` runs the model with every attention op replaced by its official
formulation (:func:`benchmarks.official_swap.official_formulation`: the paper's code transcribed, same math);
``zoo`` is what a GPU user gets, the Triton backend (its custom ops save only their inputs, output and
statistics; on meta tensors they run their fake implementations, as :mod:`benchmarks.compile_check` uses them);
``zoo-ref`` is the zoo's plain-PyTorch reference backend (what a CPU user gets).

Run: ``python -m benchmarks.memory [--models NAME ...] [--sizes 224,1024] [--dtype fp32] [--out FILE.md]``.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.harness import environment

__all__ = ["FAMILIES", "FORMULATIONS", "Family", "StepCounter", "StepMemory", "format_table", "main",
           "measure_step", "run"]

FORMULATIONS = ("official", "zoo", "zoo-ref")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Family:
    """One family's small model: the timm name, whether it takes ``img_size`` (absolute position embeddings or
    bias grids sized at build time), and the output / input scale (super-resolution: the input is the LR image,
    ``side / scale``, so that the output has the table's side)."""

    label: str
    model: str
    img_size: bool = True
    scale: int = 1

    def input_side(self, side: int) -> int:
        if side % self.scale:
            raise ValueError(f"{self.model}: output side {side} is not a multiple of the SR scale {self.scale}")
        return side // self.scale


# The smallest model of every family file (NAT, DiNAT and ViT-RPB share zoo/models/nat.py and are listed apart:
# neighbourhood attention with and without dilation, and whole-map window attention).
FAMILIES = (
    Family("Agent-Swin", "agent_swin_t"),
    Family("Agent-CSwin", "agent_cswin_t"),
    Family("Agent-DeiT", "agent_deit_t"),
    Family("Agent-PVT", "agent_pvt_t"),
    Family("BiFormer", "biformer_tiny"),
    Family("NAT", "nat_mini"),
    Family("DiNAT", "dinat_mini"),
    Family("ViT-RPB", "vitrpb_small"),
    Family("DaViT", "zoo_davit_tiny"),
    Family("EMOv2", "emo2_1m"),
    Family("LITv2", "litv2_small"),
    Family("RAVLT", "ravlt_t"),
    Family("HAT (x2 SR)", "hat_s_x2", img_size=False, scale=2),
)


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Counts of one training step (module docstring); bytes."""

    saved_bytes: int
    saved_storages: int
    peak_bytes: int


class StepCounter(TorchDispatchMode):
    """Counts the storages a step allocates (peak live bytes) and those autograd saves (module docstring).

    Use as a dispatch mode around the whole step, with :meth:`saving` around the forward::

        counter = StepCounter(exclude=[*model.parameters(), *model.buffers(), x])
        with counter:
            with counter.saving():
                loss = f(x)
            loss.backward()
        counter.result(ignore=[p.grad for p in model.parameters()])
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._excluded = {t.untyped_storage()._cdata for t in exclude}
        self._live: dict[int, tuple[int, int]] = {}  # storage address -> (allocation id, bytes)
        self._events: list[tuple[int, int]] = []  # (allocation id, +bytes on allocation / -bytes on free)
        self._saved: dict[int, int] = {}  # allocation id -> bytes, of the saved storages
        self._next = 0
        self.custom_ops: collections.Counter = collections.Counter()  # attnzoo::* calls (the Triton backend's)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "attnzoo":
            self.custom_ops[func.__name__] += 1
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._excluded or key in self._live:
            return  # a weight, the input, or a view / in-place result of a storage already counted
        nbytes = storage.nbytes()
        aid, self._next = self._next, self._next + 1
        self._live[key] = (aid, nbytes)
        self._events.append((aid, nbytes))
        weakref.finalize(storage, self._free, key, aid, nbytes)

    def _free(self, key: int, aid: int, nbytes: int) -> None:
        if self._live.get(key, (None,))[0] == aid:
            del self._live[key]
        self._events.append((aid, -nbytes))

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        # a tensor no op of the step allocated existed before it: a weight, the input, a cached constant (index
        # tables the formulations build once per geometry, as the official code's buffers)
        entry = self._live.get(t.untyped_storage()._cdata)
        if entry is not None:
            self._saved[entry[0]] = entry[1]
        return t

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Count what autograd saves for the backward within the block (the forward)."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield

    def result(self, ignore: Iterable[torch.Tensor | None] = ()) -> StepMemory:
        """The counts, leaving out the allocations of the live tensors in ``ignore`` (the parameters' grads)."""
        skip = set()
        for t in ignore:
            if t is not None and t.untyped_storage()._cdata in self._live:
                skip.add(self._live[t.untyped_storage()._cdata][0])
        live = peak = 0
        for aid, delta in self._events:
            if aid not in skip:
                live += delta
                peak = max(peak, live)
        return StepMemory(saved_bytes=sum(self._saved.values()), saved_storages=len(self._saved), peak_bytes=peak)


@contextlib.contextmanager
def _formulation(name: str) -> Iterator[None]:
    """The ops run as ``official`` (official formulations), ``zoo`` (Triton backend; on meta tensors its custom ops
    run their fakes: the interpreter flag only lets non-CUDA tensors through, nothing is interpreted) or
    ``zoo-ref`` (reference backend)."""
    from benchmarks.compile_check import meta_triton
    from benchmarks.official_swap import official_formulation
    from ops import use_backend

    if name == "official":
        with official_formulation() as calls:
            yield
        if not calls:
            raise RuntimeError("official formulation: the model called no attention op")
    elif name == "zoo":
        with meta_triton():
            yield
    elif name == "zoo-ref":
        with use_backend("reference"):
            yield
    else:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {name!r}")


def measure_step(family: Family, side: int, formulation: str, *, dtype: torch.dtype = torch.float32,
                 batch: int = 1) -> StepMemory:
    """Counts of one training step of ``family``'s model at output side ``side`` (module docstring)."""
    import timm

    import zoo.models  # noqa: F401  (registers the models)

    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    in_side = family.input_side(side)
    kwargs = {"img_size": in_side} if family.img_size else {}
    with torch.device("meta"):
        model = timm.create_model(family.model, pretrained=False, **kwargs)
    model = model.to(dtype).train()
    x = torch.empty(batch, 3, in_side, in_side, device="meta", dtype=dtype)
    params = list(model.parameters())
    with _formulation(formulation):  # warm-up: constants cached per geometry exist before the counted step
        model(x).float().square().mean().backward()
    for p in params:
        p.grad = None
    counter = StepCounter(exclude=[*params, *model.buffers(), x])
    with _formulation(formulation), counter:
        with counter.saving():
            loss = model(x).float().square().mean()
        loss.backward()
        del loss
    # the step ran the formulation it names: Triton custom ops for 'zoo' only
    if (formulation == "zoo") != bool(counter.custom_ops):
        raise RuntimeError(f"{family.model} {formulation}: attnzoo custom ops called: {dict(counter.custom_ops)}")
    return counter.result(ignore=[p.grad for p in params])


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`run`'s rows: MiB per formulation and zoo / official ratios."""
    head = ("| family | model | side (input) | saved: official | zoo | zoo-ref | zoo/official | "
            "peak: official | zoo | zoo-ref | zoo/official |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = r["memory"]
        cells = [r["family"], f"`{r['model']}`", f"{r['side']} ({r['input_side']})"]
        cells += [_mib(m[f].saved_bytes) if f in m else "-" for f in FORMULATIONS]
        cells.append(_ratio(m["zoo"].saved_bytes, m["official"].saved_bytes) if {"zoo", "official"} <= m.keys()
                     else "-")
        cells += [_mib(m[f].peak_bytes) if f in m else "-" for f in FORMULATIONS]
        cells.append(_ratio(m["zoo"].peak_bytes, m["official"].peak_bytes) if {"zoo", "official"} <= m.keys()
                     else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(families: Sequence[Family], sides: Sequence[int], *, dtype: torch.dtype, batch: int = 1,
        formulations: Sequence[str] = FORMULATIONS, log=print) -> list[dict]:
    """Every family x side x formulation; one row per family and side."""
    rows = []
    for fam in families:
        for side in sides:
            memory = {}
            for f in formulations:
                t0 = time.perf_counter()
                memory[f] = measure_step(fam, side, f, dtype=dtype, batch=batch)
                log(f"{fam.model} @ {side} {f}: saved {_mib(memory[f].saved_bytes)} MiB, peak "
                    f"{_mib(memory[f].peak_bytes)} MiB ({time.perf_counter() - t0:.1f} s)")
            rows.append(dict(family=fam.label, model=fam.model, side=side, input_side=fam.input_side(side),
                             memory=memory))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="timm names of the families' models (default: all families)")
    parser.add_argument("--sizes", default="224,1024", help="output sides, comma-separated (default 224,1024)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="the model converted to this dtype (not autocast, which does not act on meta tensors); "
                             "bf16 / fp16 fail where a model keeps an fp32 buffer (Agent-Swin's shift mask)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    families = FAMILIES
    if args.models:
        known = {f.model: f for f in FAMILIES}
        unknown = [m for m in args.models if m not in known]
        if unknown:
            parser.error(f"--models: unknown {unknown}; known: {sorted(known)}")
        families = tuple(known[m] for m in args.models)
    try:
        sides = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if args.batch < 1 or any(s < 1 for s in sides):
        parser.error(f"--batch and --sizes must be positive, got {args.batch} and {sides}")
    rows = run(families, sides, dtype=DTYPES[args.dtype], batch=args.batch, log=lambda s: print(s, file=sys.stderr))
    env = environment(torch.device("meta"))
    table = (f"`python -m benchmarks.memory {' '.join(sys.argv[1:] if argv is None else argv)}` at commit "
             f"`{env['git_commit']}` (torch {env['torch']}, timm {env['timm']}, {env['date']}): one training step, "
             f"{args.dtype}, batch {args.batch}, MiB.\n\n" + format_table(rows))
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
