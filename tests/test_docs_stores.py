"""The examples in docs/stores.md run as doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "stores.md"


def test_docs_stores_examples_run() -> None:
    failures, attempted = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert attempted > 10
    assert failures == 0
