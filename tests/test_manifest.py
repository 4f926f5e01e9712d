"""weights/manifest.yaml is well formed, names only registered zoo models, and covers every model family."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import yaml
from timm.models import model_entrypoint

import zoo

MANIFEST = Path(__file__).resolve().parents[1] / "weights" / "manifest.yaml"
REQUIRED = {"model", "url", "sha256"}
OPTIONAL = {"tag", "sha256_source", "file", "model_args", "top1", "psnr_y"}
SHA256 = re.compile(r"[0-9a-f]{64}")


def _family(model: str) -> str:
    return model_entrypoint(model).__module__


def manifest_problems(data) -> list[str]:
    """Every way `data` (the parsed manifest) breaks the manifest's rules, as readable messages."""
    if not isinstance(data, dict) or not data:
        return [f"manifest must be a non-empty mapping of family -> list of entries, got {type(data).__name__}"]
    problems = []
    seen = {}
    top1 = {}
    for section, entries in data.items():
        if not isinstance(entries, list) or not entries:
            problems.append(f"{section}: expected a non-empty list of entries, got {entries!r}")
            continue
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected a mapping, got {entry!r}")
                continue
            missing = REQUIRED - entry.keys()
            unknown = entry.keys() - REQUIRED - OPTIONAL
            if missing:
                problems.append(f"{where}: missing keys {sorted(missing)}")
            if unknown:
                problems.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(REQUIRED | OPTIONAL)})")
            model, url, sha = entry.get("model"), entry.get("url"), entry.get("sha256")
            if not isinstance(model, str) or not timm.is_model(model):
                problems.append(f"{where}: model {model!r} is not registered with timm after `import zoo`")
            if not isinstance(url, str) or not (url.startswith(("http://", "https://", "hf-hub:"))):
                problems.append(f"{where}: url {url!r} must start with http://, https:// or hf-hub:")
            if sha is not None and not (isinstance(sha, str) and SHA256.fullmatch(sha)):
                problems.append(f"{where}: sha256 {sha!r} must be null or 64 lowercase hex digits")
            if sha is not None and not (isinstance(entry.get("sha256_source"), str) and entry["sha256_source"]):
                problems.append(f"{where}: sha256 given without sha256_source (say how the hash was obtained)")
            tag = entry.get("tag")
            if tag is not None and not (isinstance(tag, str) and isinstance(model, str) and tag.startswith(model + ".")
                                        and tag in _tags(model)):
                problems.append(f"{where}: tag {tag!r} is not a registered pretrained tag {model}.TAG")
            if "model_args" in entry and not isinstance(entry["model_args"], dict):
                problems.append(f"{where}: model_args must be a mapping, got {entry['model_args']!r}")
            if "file" in entry and not (isinstance(entry["file"], str) and entry["file"]):
                problems.append(f"{where}: file must be a non-empty name, got {entry['file']!r}")
            if "top1" in entry:
                t = entry["top1"]
                if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 100:
                    problems.append(f"{where}: top1 {t!r} must be a percentage in (0, 100]")
                elif top1.setdefault(model, t) != t:
                    problems.append(f"{where}: second top1 for {model!r}: {t} (first: {top1[model]})")
            if "psnr_y" in entry:
                p = entry["psnr_y"]
                if not (isinstance(p, dict) and p and all(isinstance(v, (int, float)) and 10 < v < 60
                                                          for v in p.values())):
                    problems.append(f"{where}: psnr_y must map data sets to dB values, got {p!r}")
            # one file per entry: a folder URL is told apart by `file`, a sweep checkpoint by its `model_args`
            key = (model, url, entry.get("file"), repr(sorted((entry.get("model_args") or {}).items())))
            if key in seen:
                problems.append(f"{where}: duplicate of {seen[key]} (model {model!r}, url {url!r})")
            seen.setdefault(key, where)
    return problems


def _tags(model: str) -> list[str]:
    """Every MODEL.TAG of `model`, with or without a download (timm.list_pretrained lists only those with one)."""
    return list(timm.models.get_arch_pretrained_cfgs(model))


def _cfg_source(cfg) -> tuple[str, str | None] | None:
    """A pretrained cfg's download as a manifest entry writes it: (url, file), hf-hub:ID, or None."""
    if cfg.hf_hub_id:
        return f"hf-hub:{cfg.hf_hub_id}", None
    if isinstance(cfg.url, (tuple, list)):  # (url, file name): the file in a Drive folder, or a share link's cache name
        return cfg.url[0], cfg.url[1] if "/folders/" in cfg.url[0] else None
    return (cfg.url, None) if cfg.url else None


def tag_problems(data) -> list[str]:
    """Where the manifest and the pretrained cfgs disagree: a tagged entry whose cfg downloads another URL or knows
    another sha256 (or has no url and does not say why), and a cfg with a download that no entry names."""
    from zoo.weights import pretrained_tags, weights_notes

    problems, tagged = [], set()
    for section, entries in data.items():
        for i, entry in enumerate(entries):
            tag = entry.get("tag")
            if not tag or tag not in _tags(entry["model"]):
                continue
            tagged.add(tag)
            cfg = timm.models.get_pretrained_cfg(tag)
            notes = weights_notes(cfg)
            source = _cfg_source(cfg)
            if source is None:
                if "unavailable" not in notes:
                    problems.append(f"{section}[{i}]: {tag} has no url and no 'unavailable: REASON' note")
                continue
            if source != (entry["url"], entry.get("file")):
                problems.append(f"{section}[{i}]: {tag} downloads {source}, the manifest says "
                                f"{(entry['url'], entry.get('file'))}")
            if notes.get("sha256") != entry.get("sha256"):
                problems.append(f"{section}[{i}]: {tag} sha256 {notes.get('sha256')} in its cfg, "
                                f"{entry.get('sha256')} here")
            if entry.get("model_args") and weights_notes(cfg).get("model_args") != repr(entry["model_args"]):
                problems.append(f"{section}[{i}]: {tag} model_args {notes.get('model_args')} in its cfg, "
                                f"{entry['model_args']} here")
    for name, cfg in pretrained_tags():
        if _cfg_source(cfg) is not None and name not in tagged:
            problems.append(f"{name} downloads {_cfg_source(cfg)} but no manifest entry has tag: {name}")
    return problems


def uncovered_families(data) -> list[str]:
    """Zoo family modules (zoo.models.<family>) without a single manifest entry."""
    families = {_family(name) for name in zoo.list_models()}
    covered = {_family(e["model"]) for entries in data.values() for e in entries if timm.is_model(e.get("model"))}
    return sorted(families - covered)


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_entries_are_well_formed(manifest):
    assert manifest_problems(manifest) == []


def test_manifest_and_pretrained_cfgs_agree(manifest):
    assert tag_problems(manifest) == []


def test_tag_check_catches_disagreements(manifest):
    broken = {k: [dict(e) for e in v] for k, v in manifest.items()}
    litv2 = next(e for e in broken["litv2"] if e.get("tag") == "litv2_small.alpha_0_5")
    litv2["url"] = litv2["url"].replace("alpha_0.5", "alpha_0.7")
    litv2["sha256"] = "1" * 64
    nat = next(e for e in broken["nat"] if e.get("tag") == "nat_mini.in1k")
    del nat["tag"]
    problems = tag_problems(broken)
    assert any("litv2_small.alpha_0_5 downloads" in p for p in problems), problems
    assert any("litv2_small.alpha_0_5 sha256 None in its cfg" in p for p in problems), problems
    assert any(p.startswith("nat_mini.in1k downloads") for p in problems), problems
    assert any("sha256_source" in p for p in manifest_problems({"litv2": [litv2]}))
    assert any("not a registered pretrained tag" in p for p in manifest_problems(
        {"nat": [{"model": "nat_mini", "tag": "nat_mini.nope", "url": "https://example.org/a.pth", "sha256": None}]}))


def test_every_zoo_family_has_a_manifest_entry(manifest):
    assert uncovered_families(manifest) == []


def test_manifest_checker_catches_bad_entries():
    good = {"model": "nat_mini", "url": "https://example.org/a.pth", "sha256": None}
    assert manifest_problems({"nat": [good]}) == []
    cases = {
        "missing keys": {"model": "nat_mini", "url": "https://example.org/a.pth"},
        "unknown keys": dict(good, sha=None),
        "not registered": dict(good, model="nat_nonexistent"),
        "must start with": dict(good, url="ftp://example.org/a.pth"),
        "64 lowercase hex": dict(good, sha256="ABC123"),
        "percentage": dict(good, top1=812),
        "psnr_y must": dict(good, psnr_y=32.9),
    }
    for needle, entry in cases.items():
        problems = manifest_problems({"nat": [entry]})
        assert any(needle in p for p in problems), (needle, problems)
    assert any("duplicate" in p for p in manifest_problems({"nat": [good, dict(good)]}))
    assert manifest_problems({"nat": [good, dict(good, file="b.pth")]}) == []
    assert manifest_problems({"nat": [good, dict(good, model_args={"alpha": 0.5})]}) == []
    assert any("second top1" in p for p in manifest_problems({"nat": [dict(good, top1=81.8),
                                                                      dict(good, url="hf-hub:x/y", top1=80.0)]}))
    assert manifest_problems({"nat": []}) and manifest_problems([]) and manifest_problems(None)
    assert manifest_problems({"nat": [dict(good, sha256="0" * 64, sha256_source="sha256sum of the download")]}) == []


def test_coverage_check_names_a_family_without_entries(manifest):
    without_hat = {k: [e for e in v if _family(e["model"]) != "zoo.models.hat"] for k, v in manifest.items()}
    assert uncovered_families(without_hat) == ["zoo.models.hat"]
