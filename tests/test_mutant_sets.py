"""The mutant sets stay runnable: every snippet of ``tests/mutants.py`` and of the fresh sets
in ``tests/fresh_mutants/`` occurs exactly once in today's library (a refactor that moves one
would otherwise break the script only when someone runs it, ≈ 1 h later)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _seeded():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tests" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(f"seeded {i}", file, old, new) for i, (_, file, old, new, _) in
            enumerate(module.MUTANTS)]


def _fresh():
    return [(m["id"], m["file"], m["old"], m["new"])
            for path in sorted((ROOT / "tests" / "fresh_mutants").glob("*.json"))
            for m in json.loads(path.read_text())]


@pytest.mark.parametrize("name, file, old, new",
                         [pytest.param(*m, id=m[0]) for m in _seeded() + _fresh()])
def test_every_mutant_snippet_occurs_once_and_changes_something(name, file, old, new):
    assert old != new, name
    assert (ROOT / file).read_text().count(old) == 1, (name, file, old)
