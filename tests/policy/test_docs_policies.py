"""docs/policies.md: every `>>>` example runs as a doctest and every `toml` block loads."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from memguard import Policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DOC.parent.parent)


def test_examples_run() -> None:
    results = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        report=True,
    )
    assert results.attempted >= 20
    assert results.failed == 0


@pytest.mark.parametrize("index", range(len(TOML_BLOCK.findall(DOC.read_text()))))
def test_toml_blocks_load(index: int) -> None:
    text = TOML_BLOCK.findall(DOC.read_text())[index]
    Policy.from_toml(text, source=f"{DOC.name} toml block {index}", environ={})
