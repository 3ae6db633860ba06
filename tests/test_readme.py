"""README's example runs as written, in a fresh interpreter from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S)
    assert code is not None
    script = code.group(1) + (
        "\nfrom memguard import handle\n"
        "diagram_jobs['a'] = {'status': 'done', 'result': 'x'}\n"
        "assert handle(diagram_jobs).policy.max_jobs == 50\n"
        "assert memguard.manager.monitor.running\n"
        "memguard.manager.stop()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
