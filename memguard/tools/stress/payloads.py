"""AI-shaped results: text, JSON and binary payloads of realistic sizes."""

from __future__ import annotations

import random
from typing import Any, Optional

from memguard.tools.stress.config import KB, StoreProfile
from memguard.tools.stress.traffic import _Plan

_WORDS = (
    "resource", "module", "output", "variable", "provider", "region", "instance", "bucket",
    "cluster", "service", "deploy", "container", "network", "subnet", "gateway", "policy",
    "role", "function", "handler", "request", "response", "model", "prompt", "token",
    "diagram", "node", "edge", "flow", "sequence", "class", "entity", "relation", "schema",
    "table", "index", "query", "cache", "queue", "worker", "job", "status", "result", "error",
    "retry", "timeout", "config", "secret", "value",
)
_corpus_text: Optional[str] = None


def _corpus() -> str:
    """64 KB of deterministic pseudo-text that results are cut from."""
    global _corpus_text
    if _corpus_text is None:
        rng = random.Random(0)
        words: list[str] = []
        length = 0
        while length < 64 * KB:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        _corpus_text = " ".join(words)[: 64 * KB]
    return _corpus_text


def _text(size: int, rng: random.Random) -> str:
    """A fresh string of `size` characters (ASCII, so `size` bytes of payload).

    Built by repeating a rotation of the corpus: a new object each time (memory really used,
    never shared with another result) at memcpy speed.
    """
    corpus = _corpus()
    start = rng.randrange(len(corpus))
    rotated = corpus[start:] + corpus[:start]
    repeats, rest = divmod(max(size, 1), len(rotated))
    return rotated * repeats + rotated[:rest]


_RESOURCE_TYPES = ("aws_s3_bucket", "aws_lambda_function", "aws_iam_role", "aws_vpc",
                   "aws_ecs_service", "aws_rds_instance", "aws_sqs_queue", "aws_cloudfront")


def _json_result(size: int, rng: random.Random) -> dict[str, Any]:
    """A parsed-JSON-shaped result of about `size` bytes: the bulk in a few file contents,
    the rest a list of small resource dicts (what ``json.loads`` of an IaC answer gives)."""
    n_resources = min(200, 1 + size // (16 * KB))
    resources = [
        {
            "type": rng.choice(_RESOURCE_TYPES),
            "name": f"resource_{i}",
            "properties": {"region": "eu-west-1", "count": i,
                           "tags": {"app": "generated", "env": rng.choice(("dev", "prod"))}},
            "depends_on": [f"resource_{j}" for j in range(max(0, i - 2), i)],
        }
        for i in range(n_resources)
    ]
    n_files = min(16, 1 + size // (256 * KB))
    summary = _text(min(2 * KB, size // 10), rng)
    body = max(1, size - len(summary) - n_resources * 600)
    files = [{"path": f"modules/m{i}/main.tf", "content": _text(body // n_files, rng)}
             for i in range(n_files)]
    return {
        "summary": summary,
        "model": "gpt-4o",
        "usage": {"prompt_tokens": rng.randint(200, 4000), "completion_tokens": size // 4},
        "resources": resources,
        "files": files,
    }


def _result(plan: _Plan, profile: StoreProfile) -> Any:
    rng = random.Random(plan.content_seed)
    if profile.shape == "json":
        return _json_result(plan.size, rng)
    return _text(plan.size, rng)
