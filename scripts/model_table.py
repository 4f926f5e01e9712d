"""Generate README.md's model table from the registry.

    python scripts/model_table.py           # print the table
    python scripts/model_table.py --write   # rewrite the block between the markers in README.md
    python scripts/model_table.py --check   # exit 1 and print a diff when README.md's block is out of date

One row per model of ``zoo.list_models()``, grouped by family (model file), smallest first:

* params (M): ``sum(p.numel())`` of the model built on the meta device (no memory, even for giant models);
* GMACs: FLOPs / 2 of one forward at batch 1 and the model's default input size (``pretrained_cfg['input_size']``),
  counted by torch's ``FlopCounterMode`` with attention included (:func:`zoo.engine.flops.model_stats`: the
  attention ops run their plain-PyTorch reference while counting, and attnzoo custom ops get closed-form counts);
* top-1: the ImageNet-1K top-1 the paper / official repository reports for the official checkpoint, read from the
  ``top1`` field of that checkpoint's entry in ``weights/manifest.yaml`` (the one place where facts about official
  checkpoints live); ``–`` where no such entry has one;
* pretrained: the tags ``timm.create_model('NAME.TAG', pretrained=True)`` downloads (the first is the default);
  ``†``: the file is on Google Drive and needs the optional ``gdown`` client (``pip install gdown``); ``–``: no
  downloadable official weights (BiFormer's links are dead: ``python -m zoo.weights list`` says why per tag).

Only the lines between the markers are ever rewritten; the rest of README.md is left as it is.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

START = "<!-- model-table:start -->"
END = "<!-- model-table:end -->"
README = ROOT / "README.md"
MANIFEST = ROOT / "weights" / "manifest.yaml"


def paper_top1(manifest: Path = MANIFEST) -> dict[str, float]:
    """Model name -> reported top-1, from the manifest's checkpoint entries that carry ``top1``."""
    import yaml

    data = yaml.safe_load(manifest.read_text()) or {}
    top1: dict[str, float] = {}
    for family, entries in data.items():
        for entry in entries or ():
            if entry.get("top1") is None:
                continue
            name = entry["model"]
            if name in top1 and top1[name] != entry["top1"]:
                raise ValueError(f"{manifest}: {family}: two different top1 values for {name}: "
                                 f"{top1[name]} and {entry['top1']}")
            top1[name] = float(entry["top1"])
    return top1


def model_rows() -> list[dict]:
    import timm
    from timm.models import model_entrypoint

    import zoo
    from zoo.engine.flops import model_stats
    from zoo.weights import status

    top1 = paper_top1()
    rows = []
    for name in zoo.list_models():
        stats = model_stats(name)
        # registration order, the default tag first
        default = timm.models.get_pretrained_cfg(name).tag
        names = [p for p in timm.models.get_arch_pretrained_cfgs(name) if p in timm.list_pretrained(f"{name}.*")]
        names.sort(key=lambda p: p != f"{name}.{default}")
        tags = [p.split(".", 1)[1] + ("†" if status(timm.models.get_pretrained_cfg(p)) == "gdown" else "")
                for p in names]
        family = model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        rows.append(dict(name=name, family=family, top1=top1.get(name), tags=tags, **stats))
    unknown = sorted(set(top1) - {r["name"] for r in rows})
    if unknown:
        raise ValueError(f"{MANIFEST}: top1 given for models the zoo does not register: {unknown}")
    return sorted(rows, key=lambda r: (r["family"], r["params"], r["name"]))


def render(rows: list[dict]) -> str:
    lines = [
        "| model | family | input | params (M) | GMACs | top-1 (%) | pretrained |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        _, h, w = r["input_size"]
        top1 = "–" if r["top1"] is None else f"{r['top1']:.1f}"
        tags = ", ".join(f"`{t.rstrip('†')}`" + ("†" if t.endswith("†") else "") for t in r["tags"]) or "–"
        lines.append(f"| `{r['name']}` | {r['family']} | {h}x{w} | {r['params'] / 1e6:.1f} | "
                     f"{r['macs'] / 1e9:.2f} | {top1} | {tags} |")
    return "\n".join(lines) + "\n"


def split_readme(text: str) -> tuple[str, str, str]:
    """(before and including the start marker line, the block, the end marker line and after)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md must contain {START!r} and then {END!r} exactly once each")
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    return head + START + "\n", block.removeprefix("\n"), END + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite the block between the markers in {README.name}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 when {README.name}'s block differs (prints a diff)")
    p.add_argument("--readme", type=Path, default=README, help="the README to read / write (default: the checkout's)")
    args = p.parse_args(argv)

    table = render(model_rows())
    if not (args.write or args.check):
        print(table, end="")
        return 0
    text = args.readme.read_text()
    try:
        head, block, tail = split_readme(text)
    except ValueError as e:
        print(f"model_table.py: {args.readme}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if block == table:
            print(f"{args.readme}: model table up to date")
            return 0
        diff = difflib.unified_diff(block.splitlines(keepends=True), table.splitlines(keepends=True),
                                    f"{args.readme} (model table)", "generated")
        sys.stdout.writelines(diff)
        print(f"{args.readme}: model table out of date; run: python scripts/model_table.py --write", file=sys.stderr)
        return 1
    if block != table:
        args.readme.write_text(head + table + tail)
        print(f"{args.readme}: model table rewritten ({len(table.splitlines()) - 2} models)")
    else:
        print(f"{args.readme}: model table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
