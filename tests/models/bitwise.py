"""Bitwise fingerprints of one model per model class: the guard that a refactor changes no key and no output.

For each model below, built at a fixed seed on the CPU with one intra-op thread (so the summation order is fixed),
the fixture records:

* ``keys``: sha256 of the state dict's sorted ``name:shape`` lines (state-dict layout and parameter count);
* ``init``: sha256 of the default-initialised weights' bytes (weight init, creation order included);
* ``logits``: sha256 of ``forward``'s output bytes, with every parameter first refilled from a generator seeded
  by its own name (so the forward math is compared independently of the init);
* ``intermediates``: sha256 of every map ``forward_intermediates`` returns (and of its final features), same weights;
* ``head``: the first 8 logits, readable in a failure message.

Add a new family's smallest model (one per model class), or regenerate every entry (only when an output change is
intended, and say so in the commit)::

    python -m tests.models.bitwise --add NAME [NAME ...]
    python -m tests.models.bitwise --write
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "bitwise_outputs.json"

# One model per model class (the smallest of each), so every forward path is covered: stage layouts, padding rules,
# isotropic models, the super-resolution network. The fixture's keys are the list: `--add NAME` records a new one.
MODELS = tuple(json.loads(FIXTURE.read_text())) if FIXTURE.exists() else ()
SIZE = 64  # input side; models with a fixed input size use their own


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def _refill(model: torch.nn.Module) -> None:
    """Every parameter from its own name-seeded generator; buffers (norm statistics, index tables) keep their values.

    Small values keep activations finite; 1-D weights (norm scales) stay near 1.
    """
    for name, p in model.named_parameters():
        g = torch.Generator().manual_seed(_name_seed(name))
        values = torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.05)
        if p.ndim == 1 and name.endswith("weight"):
            values.add_(1.0)
        p.copy_(values.to(p.dtype))


def fingerprint(name: str) -> dict:
    import timm

    import zoo  # noqa: F401  (registers the models)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        sd = model.state_dict()
        keys = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(sd.items()))
        init = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for _, v in sorted(sd.items()))).hexdigest()
        _refill(model)
        c, h, w = model.pretrained_cfg["input_size"]
        if not model.pretrained_cfg.get("fixed_input_size", False):
            h = w = SIZE
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = model(x)
            record = {
                "keys": hashlib.sha256(keys.encode()).hexdigest(),
                "num_keys": len(sd),
                "init": init,
                "input": [2, c, h, w],
                "logits": _sha(out),
                "shape": list(out.shape),
                "head": [float(v) for v in out.flatten()[:8]],
            }
            if hasattr(model, "forward_intermediates"):
                final, maps = model.forward_intermediates(x)
                record["intermediates"] = [_sha(m) for m in maps] + [_sha(final)]
        return record
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--add"]:
        data = dict(json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {})
        data.update({name: fingerprint(name) for name in argv[1:]})
    else:
        data = {name: fingerprint(name) for name in MODELS}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if argv[:1] in (["--add"], ["--write"]):
        FIXTURE.write_text(text)
        print(f"wrote {FIXTURE} ({len(data)} models)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
