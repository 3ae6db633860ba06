"""Result text for the seed-like apps served under load (``guard_app.py``, ``results_app.py``).

Plain Python, no memguard: each app imports it as a top-level module (gunicorn runs them with
``benchmarks/`` on the path).
"""

from __future__ import annotations

_WORDS = ("resource", "aws_s3_bucket", "terraform", "module", "variable", "output", "diagram",
          "lambda", "network", "subnet", "gateway", "policy", "role", "bucket", "cluster")
CORPUS = " ".join(_WORDS[i * 7 % len(_WORDS)] for i in range(200_000))  # ~1.6 MB of text


def text(size: int, salt: str, corpus: str = CORPUS) -> str:
    """About `size` bytes of text: a fresh string (slices and joins copy), so each result
    holds memory of its own, as a real AI answer would. A `corpus` longer than the result
    makes it one slice (one temporary the size of the result), a shorter one a join of
    several."""
    parts, have = [salt], len(salt)
    while have < size:
        piece = corpus[: min(len(corpus), size - have)]
        parts.append(piece)
        have += len(piece)
    return "".join(parts)
