"""The bundled soft policy under the stress workload (issue 21), run as users run it: for
seeds 1-3 at the default rate, at most 15% of the results clients came back for are lost
(28% under the default policy), the peak stays at `warning` (within 4 MiB), no active job
is lost, and the verdict gives the clairvoyant reference and the gap to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("MEMGUARD_")}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_soft_policy_keeps_results_until_memory_is_short(seed: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memguard.tools.cli", "stress", "--policy", "soft", "--seed",
         str(seed), "--json", "-"], capture_output=True, text=True, timeout=240, env=CLEAN_ENV)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["params"]["policy"].endswith("soft.toml")
    assert result["jobs"]["active_lost"] == 0
    assert result["results_wanted"] > 150
    assert result["lost_share"] <= 0.15, result["verdict"]
    # The soft cuts start when a write crosses `warning`, so the sampled peak sits at it: a few
    # hundred KB under it in most runs, exactly on it or a page over in some (RSS moves by
    # pages). What holds every time is "at `warning`, within 4 MiB", far from `emergency`.
    assert result["peak_usage"] <= result["thresholds"]["warning"] + 4 * 2**20, result["verdict"]
    assert result["peak_usage"] < result["thresholds"]["emergency"], result["verdict"]
    assert result["cleanups"] == 0  # no emergency was needed
    reference = result["reference"]
    assert reference["method"] == "greedy Belady with sizes"
    assert reference["lost"] <= result["results_lost"]
    assert result["reference_gap"] == pytest.approx(
        100 * (result["lost_share"] - reference["lost_share"]), abs=0.05)
    assert "clairvoyant reference" in result["verdict"] and "gap" in result["verdict"]
