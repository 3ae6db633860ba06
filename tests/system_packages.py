"""The system packages some tests drive for real: Chromium and its WebDriver (the dashboard in
a browser), redis-server (the Redis stores) and Debian's libjemalloc2 (reclaim under jemalloc).

`.ci/system-packages` installs them where it can (root with apt-get) and otherwise prints the
one line to run. A test that needs a missing one skips, naming what to install, so `make test`
passes on a fresh machine. `.ci/run` sets MEMGUARD_REQUIRE_SYSTEM_PACKAGES=1: there a missing
package fails the test instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import glob
import os
from typing import NoReturn, Optional

import pytest

REQUIRE = "MEMGUARD_REQUIRE_SYSTEM_PACKAGES"


def missing(what: str, packages: str) -> NoReturn:
    """Skip (or, under `.ci/run`, fail) the current test: `what` is not installed."""
    message = (f"{what} is not installed; to run this test: sudo apt-get install {packages} "
               "(or .ci/system-packages as root)")
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message} [{REQUIRE}=1]", pytrace=False)
    pytest.skip(message)


def jemalloc() -> Optional[str]:
    """The path of Debian's libjemalloc.so.2 for this machine's architecture, if installed."""
    found = sorted(glob.glob("/usr/lib/*/libjemalloc.so.2"))
    return found[0] if found else None
