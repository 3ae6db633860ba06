"""The policy engine: ready policies, human values, precedence, environment, provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from memguard import (
    MemoryManager,
    MemoryPolicy,
    Policy,
    PolicyError,
    StorePolicy,
    handle,
    managed_store,
)
from memguard.policy.files import (
    bundled_policy,
    bundled_policy_names,
    load_policy,
    policy_from_environment,
)
from memguard.policy.options import DEFAULT_ACTIVE_STATUSES, ActiveWhen
from memguard.policy.thresholds import Thresholds
from memguard.policy.units import Percent

MB = 1024**2
ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted((ROOT / "policies").glob("*.toml"))
SEED = {
    "diagram": (20, 50),
    "iac": (30, 50),
    "infrastructure": (45, 30),
    "application": (30, 30),
    "concept": (40, 25),
    "app_creation": (60, 20),
}


@pytest.fixture(autouse=True)
def _no_memguard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that read os.environ (the manager does) must not see the caller's knobs."""
    for variable in (
        "MEMGUARD_POLICY",
        "MEMGUARD_MEMORY_LIMIT",
        "MEMGUARD_CHECK_INTERVAL",
        "JOB_RETENTION_MINUTES",
        "MAX_JOBS_PER_STORE",
    ):
        monkeypatch.delenv(variable, raising=False)


# -- ready policies -----------------------------------------------------------------------------


def test_there_are_ready_policies() -> None:
    assert {path.stem for path in POLICY_FILES} >= {"default", "container", "small-dyno"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda path: path.name)
def test_every_ready_policy_loads(path: Path) -> None:
    policy = load_policy(path, environ={})
    assert policy.source == str(path)
    for name in [*policy.stores, "some_other_store"]:
        assert isinstance(policy.store_policy(name), StorePolicy)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda path: path.name)
def test_every_ready_policy_says_when_to_use_it(path: Path) -> None:
    header = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert header.startswith("#")
    assert "Use it when" in header


def test_default_policy_holds_the_seed_numbers() -> None:
    policy = load_policy(bundled_policy("default"), environ={})
    assert set(policy.stores) == set(SEED)
    for name, (minutes, jobs) in SEED.items():
        store = policy.store_policy(name)
        assert (store.max_age, store.max_jobs) == (minutes * 60, jobs)
    memory = policy.memory
    assert memory.limit == 512 * MB
    assert (memory.warning, memory.warning_heap) == (400 * MB, 300 * MB)
    assert (memory.emergency, memory.emergency_target, memory.critical) == (
        500 * MB,
        400 * MB,
        600 * MB,
    )
    assert (memory.check_interval, memory.gc_interval) == (120.0, 300.0)


def test_container_policy_resolves_percentages_at_run_time() -> None:
    memory = load_policy(bundled_policy("container"), environ={}).memory
    assert memory.limit == "auto"
    assert memory.warning == Percent(0.75)
    assert memory.resolve(None).warning is None
    thresholds = memory.resolve(1000 * MB)
    assert thresholds.warning == 750 * MB
    assert thresholds.emergency == 850 * MB
    assert thresholds.emergency_target == 700 * MB
    assert thresholds.critical == 950 * MB
    assert thresholds.limit == 1000 * MB


def test_bundled_policy_names_and_paths() -> None:
    assert set(bundled_policy_names()) == {path.stem for path in POLICY_FILES}
    assert bundled_policy("default") == bundled_policy("default.toml")
    assert bundled_policy("default").read_text() == (ROOT / "policies" / "default.toml").read_text()
    with pytest.raises(FileNotFoundError, match=r"available: .*default"):
        bundled_policy("nope")


# -- human values -------------------------------------------------------------------------------


def test_store_policy_reads_human_values() -> None:
    store = StorePolicy(max_age="20m", max_idle="90s", max_jobs=5, max_bytes="50MB")
    assert store.max_age == 1200.0
    assert store.max_idle == 90.0
    assert store.max_bytes == 50 * MB
    assert StorePolicy(release="result").release == ("result",)
    active = StorePolicy(active={"field": "state", "in": ["busy"]}).active
    assert active == ActiveWhen("state", frozenset({"busy"}))
    assert active({"state": "busy"}) and not active({"state": "done"})


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_age": "20 minutes"}, 'max_age: expected a duration such as 90, "90s"'),
        ({"max_idle": 0}, "max_idle: "),
        ({"max_jobs": "50"}, "max_jobs: expected a whole number above zero"),
        ({"max_jobs": True}, "max_jobs: "),
        ({"max_bytes": "80%"}, "max_bytes: "),
        ({"order": "fifo"}, 'order: expected an eviction order: one of "lru"'),
        ({"release": [1]}, "release: "),
        ({"active": 5}, "active: "),
        ({"size": 5}, "size: "),
        ({"max_age": "10m", "max_idle": "20m"}, "max_idle: 20m must not exceed max_age (10m)"),
    ],
)
def test_store_policy_errors_are_value_errors_naming_the_option(
    options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValueError) as caught:
        StorePolicy(**options)  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_memory_policy_reads_human_values_and_checks_order() -> None:
    memory = MemoryPolicy(limit="1GB", warning="80%", emergency="900MB", check_interval="30s")
    assert memory.limit == 1024 * MB
    assert memory.resolve() == Thresholds(
        warning=round(0.8 * 1024 * MB),
        emergency=900 * MB,
        emergency_target=round(0.7 * 1024 * MB),
        critical=1024 * MB,
        limit=1024 * MB,
    )
    assert memory.check_interval == 30.0
    with pytest.raises(ValueError, match=r"emergency: warning \(900.0MB\) must be below emergency"):
        MemoryPolicy(limit="1GB", warning="900MB", emergency="85%")
    with pytest.raises(ValueError, match="no limit is set"):
        MemoryPolicy(limit=None)  # the built-in thresholds are percentages
    assert MemoryPolicy(limit="auto", warning="950MB").warning == 950 * MB  # not comparable yet


def test_numeric_limit_wins_over_the_detected_one() -> None:
    memory = MemoryPolicy(limit="512MB")
    assert memory.resolve(2048 * MB).limit == 512 * MB
    assert MemoryPolicy().resolve(2048 * MB).warning == 1536 * MB


# -- precedence and provenance ------------------------------------------------------------------

LAYERED = """\
[defaults]
max_age = "30m"
max_idle = "10m"
max_jobs = 50
order = "oldest"

[stores.diagram]
max_age = "20m"
release = ["result", "image"]
"""


def test_precedence_built_in_defaults_decorator_store_environment() -> None:
    policy = Policy.from_toml(LAYERED, "layered.toml", environ={"MAX_JOBS_PER_STORE": "7"})
    declared = {"max_age": "1h", "max_jobs": 3, "max_bytes": "5MB", "order": None}
    explained = policy.explain("diagram", declared)
    assert explained["max_age"] == (1200.0, "layered.toml:8")  # [stores] beats decorator
    assert explained["max_jobs"] == (7, "env MAX_JOBS_PER_STORE")  # env beats all
    assert explained["max_bytes"] == (5 * MB, "decorator")  # decorator beats built-in
    assert explained["order"] == ("oldest", "layered.toml:5")  # None = not declared
    assert explained["max_idle"] == (600.0, "layered.toml:3")
    assert explained["release"] == (("result", "image"), "layered.toml:9")
    assert explained["size"] == (None, "built-in")
    assert explained["active"] == (ActiveWhen(), "built-in")
    other = policy.explain("iac", declared)
    assert other["max_age"] == (3600.0, "decorator")  # decorator beats [defaults]
    assert policy.store_policy("iac", declared).max_age == 3600.0


def test_unknown_declared_option_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match='unknown store option "max_ages"; did you mean "max_age"'):
        Policy().store_policy("x", {"max_ages": "20m"})


def test_a_higher_max_age_caps_an_inherited_max_idle() -> None:
    policy = Policy.from_toml(LAYERED, "layered.toml", environ={})
    explained = policy.explain("iac", {"max_age": "5m"})
    assert explained["max_idle"] == (300.0, "decorator (max_age caps max_idle)")
    with pytest.raises(ValueError, match="must not exceed"):
        policy.store_policy("iac", {"max_age": "5m", "max_idle": "6m"})  # one level: an error


def test_environment_overrides_every_store() -> None:
    environ = {
        "JOB_RETENTION_MINUTES": "5",
        "MAX_JOBS_PER_STORE": "9",
        "MEMGUARD_MEMORY_LIMIT": "1GB",
        "MEMGUARD_CHECK_INTERVAL": "45s",
        "MEMGUARD_POLICY": "",
    }
    policy = load_policy(bundled_policy("default"), environ=environ)
    for name in [*SEED, "unlisted"]:
        store = policy.store_policy(name, {"max_age": "2h", "max_jobs": 1000})
        assert (store.max_age, store.max_jobs) == (300.0, 9)
    assert policy.store_policy("x", {"max_idle": "20m"}).max_idle == 300.0  # capped, valid
    memory = policy.explain_memory()
    assert memory["limit"] == (1024 * MB, "env MEMGUARD_MEMORY_LIMIT")
    assert memory["check_interval"] == (45.0, "env MEMGUARD_CHECK_INTERVAL")
    assert memory["warning"][1].endswith("default.toml:13")
    assert memory["cooldown"] == (30.0, "built-in")


def test_empty_environment_values_count_as_unset() -> None:
    policy = Policy.from_toml("", environ={"JOB_RETENTION_MINUTES": " ", "MAX_JOBS_PER_STORE": ""})
    assert policy.overrides == {}


def test_default_policy_honours_the_environment() -> None:
    assert Policy.default({}) == Policy(source="<built-in>")
    policy = Policy.default({"JOB_RETENTION_MINUTES": "1.5"})
    assert policy.store_policy("x").max_age == 90.0
    assert policy.explain("x")["max_age"] == (90.0, "env JOB_RETENTION_MINUTES")


def test_policy_from_environment(tmp_path: Path) -> None:
    assert policy_from_environment({}).source == "<built-in>"
    path = tmp_path / "mine.toml"
    path.write_text("[stores.diagram]\nmax_jobs = 3\n")
    policy = policy_from_environment({"MEMGUARD_POLICY": str(path), "MAX_JOBS_PER_STORE": "4"})
    assert policy.source == str(path)
    assert policy.explain("diagram")["max_jobs"] == (4, "env MAX_JOBS_PER_STORE")
    with pytest.raises(PolicyError) as caught:
        policy_from_environment({"MEMGUARD_POLICY": str(tmp_path / "missing.toml")})
    assert (caught.value.source, caught.value.key) == ("environment", "MEMGUARD_POLICY")


def test_explain_memory_names_built_in_and_file_values() -> None:
    policy = Policy.from_toml('[memory]\nlimit = "auto"\nwarning = "70%"\n', "m.toml", environ={})
    explained = policy.explain_memory()
    assert explained["warning"] == (Percent(0.7), "m.toml:3")
    assert explained["emergency"] == (Percent(0.9), "built-in")
    assert explained["rules"] == (("age", "idle", "count", "bytes", "emergency"), "built-in")


# -- loading ------------------------------------------------------------------------------------


def test_load_policy_takes_paths_and_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[defaults]\nmax_jobs = 5\n")
    monkeypatch.chdir(tmp_path)
    for argument in (path, str(path), "p.toml"):
        assert load_policy(argument, environ={}).defaults == {"max_jobs": 5}
    text_policy = load_policy("[defaults]\nmax_jobs = 6\n", environ={})
    assert (text_policy.defaults, text_policy.source) == ({"max_jobs": 6}, "<string>")
    with pytest.raises(PolicyError, match="No such file"):
        load_policy("absent.toml", environ={})


def test_inline_and_quoted_forms_load() -> None:
    policy = Policy.from_toml(
        '[stores]\ndiagram = { max_age = "20m", active = { field = "state", in = ["busy"] } }\n'
        '[stores."my.store"]\nmax_jobs = 2\n',
        "inline.toml",
        environ={},
    )
    assert policy.explain("diagram")["active"] == (
        ActiveWhen("state", frozenset({"busy"})),
        "inline.toml:2",
    )
    assert policy.explain("my.store")["max_jobs"] == (2, "inline.toml:4")


def test_active_table_defaults() -> None:
    policy = Policy.from_toml('[defaults]\nactive = { field = "state" }\n', environ={})
    assert policy.store_policy("x").active == ActiveWhen("state", DEFAULT_ACTIVE_STATUSES)


def test_rules_select_the_pipeline() -> None:
    policy = Policy.from_toml('[pipeline]\nrules = ["age", "emergency"]\n', "r.toml", environ={})
    assert policy.rules == ("age", "emergency")
    assert policy.explain_memory()["rules"] == (("age", "emergency"), "r.toml:2")


# -- applied whole or not at all ----------------------------------------------------------------


def test_manager_applies_a_policy_to_live_stores_or_nothing(tmp_path: Path) -> None:
    manager = MemoryManager()

    @managed_store(name="diagram", max_age="1h", manager=manager)
    class DiagramJobs(dict[str, object]):
        pass

    jobs = DiagramJobs()
    assert handle(jobs).policy.max_age == 3600.0
    manager.load_policy(str(bundled_policy("default")))
    assert handle(jobs).policy.max_age == 1200.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[stores.diagram]\nmax_age = "5m"\n\n[memory]\nlimit = "lots"\n')
    with pytest.raises(PolicyError):
        manager.load_policy(str(bad))
    assert handle(jobs).policy.max_age == 1200.0
    assert manager.policy.source == str(bundled_policy("default"))
