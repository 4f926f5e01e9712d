"""Official parameter count of every zoo model, ``sum(p.numel() for p in model.parameters())``, collected from the
families' test files.

Each ``tests/models/test_<family>.py`` holds its variants' counts as a module-level literal ``PARAM_COUNTS = {...}``,
each with the official code (owner/repo and file) it was measured on. `tests/models/test_models.py` builds every
model in ``zoo.list_models()`` on the meta device and compares it with the union; a model that no file lists fails
the suite, so a new family's test file brings its counts and nothing else has to change.

The literals are read from the source (``ast.literal_eval``), not by importing the test modules: the test files
themselves import this module (a cycle), pytest imports them under their own names (a second copy under
``tests.models.test_*`` would run every module twice), and collecting the numbers should not import what the tests
import.
"""
import ast
from pathlib import Path

__all__ = ["PARAM_COUNTS"]


def _collect(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    owner: dict[str, str] = {}
    for path in sorted(folder.glob("test_*.py")):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            names = [getattr(t, "id", None) for t in node.targets] if isinstance(node, ast.Assign) else []
            if "PARAM_COUNTS" not in names:
                continue
            try:
                table = ast.literal_eval(node.value)
            except ValueError as e:
                raise ValueError(f"{path.name}:{node.lineno}: PARAM_COUNTS must be a literal dict of model name -> "
                                 f"int ({e})") from None
            for name, count in table.items():
                if name in owner:
                    raise ValueError(f"{name!r} is in PARAM_COUNTS of both {owner[name]} and {path.name}")
                owner[name] = path.name
                counts[name] = count
    return counts


PARAM_COUNTS: dict[str, int] = _collect(Path(__file__).parent)
