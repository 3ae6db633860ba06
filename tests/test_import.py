"""`import memguard` does no I/O (DESIGN section 1): it reads no policy, no package metadata and
no /proc file; the default manager reads the policy the environment names when first used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

AUDIT = textwrap.dedent("""
    import json, sys
    opened = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], str):
            path = args[0]
            if not path.endswith((".py", ".pyc", ".so", ".pth")) and "__pycache__" not in path:
                opened.append(path)

    sys.addaudithook(hook)
    import memguard
    at_import = list(opened)
    limit = memguard.manager.policy.memory.limit
    print(json.dumps({"at_import": at_import, "after_use": opened, "limit": limit}))
""")


def run_audited(policy: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", AUDIT], capture_output=True, text=True,
                          timeout=60, env={"MEMGUARD_POLICY": str(policy), "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_import_reads_no_file_and_the_policy_on_first_use(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[memory]\nlimit = "300MB"\n')
    result = run_audited(policy)
    at_import = result["at_import"]
    assert isinstance(at_import, list)
    # Directory listings of the import system are not reads of data; anything else is.
    files = [path for path in at_import if not Path(path).is_dir()]
    assert files == [], f"import memguard read {files}"
    after = result["after_use"]
    assert isinstance(after, list) and str(policy) in after
    assert result["limit"] == 300 * 2**20


def test_a_broken_environment_policy_surfaces_at_start_not_at_import(tmp_path: Path) -> None:
    script = ("import memguard\n"
              "assert memguard.manager.policy.source == '<built-in>'\n"
              "try:\n    memguard.manager.start()\n"
              "except memguard.PolicyError as error:\n    print('refused:', error)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={"MEMGUARD_POLICY": str(tmp_path / "missing.toml")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:") and "missing.toml" in done.stdout
