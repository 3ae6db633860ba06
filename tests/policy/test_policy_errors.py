# ruff: noqa: E501  (the table of bad inputs reads best one case per line)
"""Every bad policy is one PolicyError naming file, line, key path, bad value and what is allowed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from memguard import MemoryManager, Policy, PolicyError, managed_store
from memguard.policy.files import load_policy

#: (id, TOML text, key path, line, fragment naming the bad value, fragment saying what's allowed)
# fmt: off
BAD = [
    # syntax
    ('syntax-unquoted', '[memory]\nlimit = 512MB\n', 'memory.limit', 2, '512MB', 'strings in quotes'),
    ('syntax-unterminated', '[memory]\nwarning = "400MB\n', 'memory.warning', 2, '"400MB', 'expected TOML'),
    ('syntax-header', '# a comment\n[stores.diagram\nmax_age = "20m"\n', 'stores.diagram', 2, '[stores.diagram', '[section] headers'),
    ('duplicate-store', '[stores.diagram]\nmax_age = "20m"\n\n[stores.diagram]\nmax_jobs = 5\n', 'stores.diagram', 4, 'stores.diagram', 'at most once'),
    ('duplicate-key', '[stores.iac]\nmax_age = "20m"\nmax_age = "30m"\n', 'stores.iac.max_age', 3, 'stores.iac.max_age', 'at most once'),
    # unknown sections and keys, with "did you mean"
    ('unknown-section', '[memroy]\nlimit = "1GB"\n', 'memroy', 1, '"memroy"', 'did you mean "memory"?'),
    ('unknown-section-plural', '[store.diagram]\nmax_age = "20m"\n', 'store', 1, '"store"', 'did you mean "stores"?'),
    ('unknown-memory-key', '[memory]\nlimit = "1GB"\nwarnign = "400MB"\n', 'memory.warnign', 3, '"warnign"', 'did you mean "warning"?'),
    ('unknown-store-key', '[stores.diagram]\nmax_ages = "20m"\n', 'stores.diagram.max_ages', 2, '"max_ages"', 'did you mean "max_age"?'),
    ('unknown-defaults-key', '[defaults]\nmax_job = 5\n', 'defaults.max_job', 2, '"max_job"', 'did you mean "max_jobs"?'),
    ('misplaced-key', '[defaults]\nlimit = "512MB"\n', 'defaults.limit', 2, '"limit"', 'limit belongs in [memory]'),
    ('top-level-key', 'max_age = "20m"\n', 'max_age', 1, '"max_age"', 'max_age belongs in [defaults]'),
    ('unknown-pipeline-key', '[pipeline]\nrule = ["age"]\n', 'pipeline.rule', 2, '"rule"', 'did you mean "rules"?'),
    ('unknown-active-key', '[defaults]\nactive = { field = "status", inn = ["running"] }\n', 'defaults.active.inn', 2, '"inn"', 'did you mean "in"?'),
    # wrong types
    ('section-not-table', 'memory = 5\n', 'memory', 1, '5', 'expected a table [memory]'),
    ('store-not-table', '[stores]\ndiagram = 5\n', 'stores.diagram', 2, '5', 'expected a table [stores.diagram]'),
    ('jobs-string', '[stores.diagram]\nmax_jobs = "fifty"\n', 'stores.diagram.max_jobs', 2, '"fifty"', 'whole number above zero'),
    ('jobs-float', '[defaults]\nmax_jobs = 50.5\n', 'defaults.max_jobs', 2, '50.5', 'whole number above zero'),
    ('jobs-bool', '[defaults]\nmax_jobs = true\n', 'defaults.max_jobs', 2, 'True', 'whole number above zero'),
    ('age-bool', '[defaults]\nmax_age = false\n', 'defaults.max_age', 2, 'False', '"1h30m"'),
    ('recycle-string', '[memory]\nrecycle = "yes"\n', 'memory.recycle', 2, '"yes"', 'true or false'),
    ('active-string', '[defaults]\nactive = "running"\n', 'defaults.active', 2, '"running"', 'field = "status"'),
    ('active-in-numbers', '[defaults]\nactive = { in = [1, 2] }\n', 'defaults.active', 2, '1', 'non-empty strings'),
    ('release-number', '[defaults]\nrelease = 5\n', 'defaults.release', 2, '5', '["result"]'),
    ('release-empty-name', '[stores.x]\nrelease = ["result", ""]\n', 'stores.x.release', 2, '""', 'non-empty strings'),
    ('rules-string', '[pipeline]\nrules = "age"\n', 'pipeline.rules', 2, '"age"', '"emergency"'),
    # zero and negative
    ('jobs-zero', '[stores.diagram]\nmax_jobs = 0\n', 'stores.diagram.max_jobs', 2, '0', 'above zero'),
    ('jobs-negative', '[stores.diagram]\nmax_jobs = -5\n', 'stores.diagram.max_jobs', 2, '-5', 'above zero'),
    ('age-zero', '[stores.diagram]\nmax_age = 0\n', 'stores.diagram.max_age', 2, '0', 'more than zero'),
    ('age-negative', '[stores.diagram]\nmax_age = "-5m"\n', 'stores.diagram.max_age', 2, '"-5m"', 'negative'),
    ('bytes-zero', '[defaults]\nmax_bytes = "0MB"\n', 'defaults.max_bytes', 2, '"0MB"', 'more than zero'),
    ('limit-zero', '[memory]\nlimit = 0\n', 'memory.limit', 2, '0', '"auto"'),
    ('gc-zero', '[memory]\ngc_interval = 0\n', 'memory.gc_interval', 2, '0', 'more than zero'),
    ('cooldown-negative', '[memory]\ncooldown = -1\n', 'memory.cooldown', 2, '-1', 'negative'),
    ('percent-zero', '[memory]\nlimit = "auto"\nwarning = "0%"\n', 'memory.warning', 3, '"0%"', 'above 0%'),
    # bad units
    ('age-unit', '[stores.diagram]\nmax_age = "20 minutes"\n', 'stores.diagram.max_age', 2, '"20 minutes"', '"20m"'),
    ('bytes-unit', '[defaults]\nmax_bytes = "50 megs"\n', 'defaults.max_bytes', 2, '"50 megs"', '"512MB"'),
    ('limit-unit', '[memory]\nlimit = "lots"\n', 'memory.limit', 2, '"lots"', '"auto"'),
    ('interval-unit', '[memory]\ncheck_interval = "often"\n', 'memory.check_interval', 2, '"often"', '"90s"'),
    ('heap-unit', '[memory]\nwarning_heap = "300 MBs"\n', 'memory.warning_heap', 2, '"300 MBs"', '"80%"'),
    ('bytes-percent', '[defaults]\nmax_bytes = "50%"\n', 'defaults.max_bytes', 2, '"50%"', 'percentage'),
    ('percent-too-big', '[memory]\nlimit = "auto"\ncritical = "2000%"\n', 'memory.critical', 3, '"2000%"', 'at most 1000%'),
    # percentages need a limit
    ('percent-no-limit', '[memory]\nwarning = "80%"\n', 'memory.warning', 2, '"80%"', 'limit = "auto"'),
    # threshold order
    ('warning-above-emergency', '[memory]\nwarning = "500MB"\nemergency = "400MB"\ncritical = "600MB"\n', 'memory.emergency', 3, '"400MB"', 'warning < emergency < critical'),
    ('emergency-equals-critical', '[memory]\nwarning = "400MB"\nemergency = "600MB"\ncritical = "600MB"\n', 'memory.critical', 4, '"600MB"', 'warning < emergency < critical'),
    ('target-above-emergency', '[memory]\nwarning = "400MB"\nemergency = "500MB"\nemergency_target = "550MB"\ncritical = "600MB"\n', 'memory.emergency_target', 4, '"550MB"', 'emergency_target < emergency'),
    ('percent-order', '[memory]\nlimit = "auto"\nwarning = "90%"\nemergency = "80%"\n', 'memory.emergency', 4, '"80%"', 'warning < emergency'),
    ('mixed-order-numeric-limit', '[memory]\nlimit = "512MB"\nwarning = "450MB"\nemergency = "80%"\ncritical = "600MB"\n', 'memory.emergency', 4, '"80%"', 'warning < emergency'),
    # names from closed sets
    ('unknown-rule', '[pipeline]\nrules = ["age", "idel", "emergency"]\n', 'pipeline.rules', 2, '"idel"', 'did you mean "idle"?'),
    ('duplicate-rule', '[pipeline]\nrules = ["age", "age"]\n', 'pipeline.rules', 2, '"age"', 'at most once'),
    ('unknown-order', '[stores.diagram]\norder = "fifo"\n', 'stores.diagram.order', 2, '"fifo"', '"lru", "oldest", "largest"'),
    ('unknown-emergency-order', '[memory]\nemergency_order = "larger"\n', 'memory.emergency_order', 2, '"larger"', 'did you mean "largest"?'),
    ('unknown-scope', '[memory]\nscope = "container"\n', 'memory.scope', 2, '"container"', '"process", "cgroup", "auto"'),
    # cross-field store checks
    ('idle-above-age', '[stores.iac]\nmax_age = "20m"\nmax_idle = "30m"\n', 'stores.iac.max_idle', 3, '"30m"', 'must not exceed max_age'),
    ('idle-above-default-age', '[defaults]\nmax_age = "20m"\n[stores.iac]\nmax_idle = "1h"\n', 'stores.iac.max_idle', 4, '"1h"', 'must not exceed max_age'),
    # lines and keys in harder places
    ('inline-store', '[stores]\ndiagram = { max_age = "20 minutes" }\n', 'stores.diagram.max_age', 2, '"20 minutes"', '"1h30m"'),
    ('quoted-store-name', '[stores."my.store"]\nmax_jobs = 0\n', 'stores."my.store".max_jobs', 2, '0', 'above zero'),
    ('dotted-key', '[stores]\ndiagram.max_age = "forever"\n', 'stores.diagram.max_age', 2, '"forever"', '"20m"'),
    ('late-line', '# comment\n\n[memory]\nlimit = "1GB"\n\n# more\n\n[stores.a]\nmax_jobs = 3\n\n[stores.b]\nmax_age = "2 weeks"\n', 'stores.b.max_age', 12, '"2 weeks"', '"2d"'),
    ('after-multiline-string', '[memory]\nscope = """\n[stores.x]\nmax_age = 1\n"""\n', 'memory.scope', 2, '"[stores.x]\\nmax_age = 1\\n"', '"process", "cgroup", "auto"'),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "line", "bad", "allowed"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_policy_names_file_line_key_value_and_allowed(
    tmp_path: Path, text: str, key: str | None, line: int, bad: str, allowed: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, environ={})
    error = caught.value
    message = str(error)
    assert error.source == str(path)
    assert message.startswith(f"{path}:{line}: ")
    assert error.line == line
    assert error.key == key
    if key is not None:
        assert f": {key}: " in message
    assert bad in message
    assert allowed in message
    assert len(message.splitlines()) == 1


def test_at_least_thirty_bad_inputs() -> None:
    assert len(BAD) >= 30
    assert len({case[0] for case in BAD}) == len(BAD)


def test_text_source_defaults_to_string() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_toml('[memory]\nlimit = "lots"\n', environ={})
    assert caught.value.source == "<string>"
    assert str(caught.value).startswith("<string>:2: memory.limit: ")


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("MEMGUARD_MEMORY_LIMIT", "lots", '"auto"'),
        ("MEMGUARD_MEMORY_LIMIT", "0", "more than zero"),
        ("MEMGUARD_CHECK_INTERVAL", "often", '"90s"'),
        ("MEMGUARD_CHECK_INTERVAL", "0", "more than zero"),
        ("JOB_RETENTION_MINUTES", "20m", "number of minutes"),
        ("JOB_RETENTION_MINUTES", "-3", "number of minutes above zero"),
        ("JOB_RETENTION_MINUTES", "nan", "number of minutes above zero"),
        ("MAX_JOBS_PER_STORE", "many", "whole number above zero"),
        ("MAX_JOBS_PER_STORE", "0", "whole number above zero"),
        ("MAX_JOBS_PER_STORE", "2.5", "whole number above zero"),
    ],
)
def test_bad_environment_names_the_variable(variable: str, value: str, allowed: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_toml("", environ={variable: value})
    error = caught.value
    assert error.source == "environment"
    assert error.key == variable
    assert error.line is None
    assert value in str(error)
    assert allowed in str(error)


def test_environment_limit_that_breaks_the_threshold_order_blames_the_file_value() -> None:
    text = '[memory]\nlimit = "auto"\nwarning = "450MB"\nemergency = "90%"\n'
    Policy.from_toml(text, environ={})  # fine while the limit is unknown
    with pytest.raises(PolicyError) as caught:
        Policy.from_toml(text, environ={"MEMGUARD_MEMORY_LIMIT": "256MB"})
    assert caught.value.key == "memory.emergency"
    assert caught.value.line == 4
    assert "warning < emergency" in str(caught.value)


def test_environment_limit_supplies_the_limit_percentages_need() -> None:
    policy = Policy.from_toml(
        '[memory]\nwarning = "80%"\n', environ={"MEMGUARD_MEMORY_LIMIT": "1GB"}
    )
    assert policy.memory.resolve().warning == round(0.8 * 1024**3)


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing, environ={})
    assert caught.value.source == str(missing)
    assert "No such file" in str(caught.value)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[memory]")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary, environ={})


# -- hostile values (issue 12, item 9) -------------------------------------------------------


HUGE = str(10**400)


@pytest.mark.parametrize(("text", "key", "line"), [
    (f"[defaults]\nmax_age = {HUGE}\n", "defaults.max_age", 2),
    (f"[memory]\nlimit = {HUGE}\n", "memory.limit", 2),
    (f"[memory]\ncheck_interval = {HUGE}\n", "memory.check_interval", 2),
    ("[memory]\nlimit = " + "1" + "0" * 30 + "\n", "memory.limit", 2),
    ("[defaults]\nmax_age = 1e300\n", "defaults.max_age", 2),
    ("[defaults]\nmax_jobs = " + "9" * 5000 + "\n", "defaults.max_jobs", 2),
    ("[defaults]\nmax_jobs = " + "9" * 40 + "\n", "defaults.max_jobs", 2),
    ("[defaults]\nrelease = " + "[" * 3000 + "]" * 3000 + "\n", "defaults.release", 2),
    ("[defaults]\nactive = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "defaults.active", 2),
    ("[defaults]\n\nmax_age = '\u0663\u0660m'\n", "defaults.max_age", 3),
    ("[memory]\nlimit = '\uff15\uff11\uff12MB'\n", "memory.limit", 2),
    ('[memory]\nwarning = "99999999999999999999999999999999999999999%"\nlimit = "1GB"\n',
     "memory.warning", 2),
])  # fmt: skip
def test_hostile_values_are_one_policy_error(text: str, key: str, line: int) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, environ={})
    error = caught.value
    assert (error.source, error.line, error.key) == ("<string>", line, key)
    assert len(str(error)) < 500 and "\n" not in str(error)


@pytest.mark.parametrize("environ", [
    {"MEMGUARD_MEMORY_LIMIT": HUGE}, {"MEMGUARD_CHECK_INTERVAL": HUGE},
    {"JOB_RETENTION_MINUTES": "\u0663\u0660"}, {"JOB_RETENTION_MINUTES": "1e300"},
    {"MAX_JOBS_PER_STORE": "9" * 5000}, {"MAX_JOBS_PER_STORE": "\uff15\uff10"},
    {"MAX_JOBS_PER_STORE": "1_000"},
])  # fmt: skip
def test_hostile_environment_is_one_policy_error(environ: dict[str, str]) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.default(environ)
    assert caught.value.source == "environment"
    assert caught.value.key == next(iter(environ))


def test_a_policy_accepted_with_the_largest_values_works(manager: MemoryManager) -> None:
    policy = load_policy('[memory]\nlimit = "1048576TB"\ncheck_interval = "36500d"\n'
                         '[defaults]\nmax_jobs = 1000000000000\nmax_age = "36500d"\n',
                         environ={})
    manager.apply_policy(policy)
    assert policy.memory.resolve().emergency == round(2**60 * 0.9)

    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["a"] = {"status": "done"}
    assert manager.run_cleanup().evicted == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_toml_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_policy(fifo)
        except BaseException as error:  # collected and asserted below
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():  # unblock the reader before failing
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "w"):
            pass
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PolicyError)
    assert "not a regular file" in str(outcome[0]) and str(fifo) in str(outcome[0])
