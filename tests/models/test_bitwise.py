"""No refactor changes a model: state-dict keys, weight init, logits and intermediates stay bitwise equal to the
fixture recorded before the staged-backbone refactor (see tests/models/bitwise.py for what is hashed and how)."""
import json

import pytest
from timm.models import model_entrypoint

import zoo
from tests.models.bitwise import FIXTURE, MODELS, fingerprint

EXPECTED = json.loads(FIXTURE.read_text())


def test_fixture_covers_every_family():
    """Every family file has at least one model in the fixture (`python -m tests.models.bitwise --add NAME`)."""
    families = {model_entrypoint(n).__module__ for n in zoo.list_models()}
    covered = {model_entrypoint(n).__module__ for n in MODELS}
    assert not families - covered, f'families without a bitwise fingerprint: {sorted(families - covered)}'


@pytest.mark.parametrize("name", MODELS)
def test_bitwise_equal_to_fixture(name):
    got, want = fingerprint(name), EXPECTED[name]
    changed = [k for k in want if got.get(k) != want[k]]
    assert not changed, (
        f"{name}: {', '.join(changed)} changed (first logits {got['head'][:4]} vs recorded {want['head'][:4]})")
