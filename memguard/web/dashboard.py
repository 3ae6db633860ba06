"""The live dashboard page served at ``GET /memory/dashboard``: the file and its headers.

The page (``memguard/web/static/dashboard.html``) is one self-contained HTML file: its only
script and its only stylesheet are inline, it loads nothing from any other origin (no CDN, so
it works offline and behind the strictest egress rules) and it reads nothing but the JSON of
``GET /memory`` beside it, which holds counts and sizes, never a job's contents.

It is served with a strict Content-Security-Policy: no source is allowed by default, the
inline script and stylesheet are allowed by their SHA-256 hashes (computed here from the file,
so the page stays cacheable and byte-identical across requests, which a per-request nonce
would not), ``fetch`` may reach this origin only, and Trusted Types are required so that no
HTML can ever be built from strings (the page writes text nodes only). Kept apart from
`memguard.web` so the route there stays one line.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re
from typing import Final

CONTENT_TYPE: Final = "text/html; charset=utf-8"
_INLINE: Final = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@functools.lru_cache(maxsize=1)
def _load() -> tuple[bytes, str]:
    """(the page's bytes, its Content-Security-Policy): read once per process."""
    resource = importlib.resources.files("memguard.web") / "static" / "dashboard.html"
    text = resource.read_text(encoding="utf-8")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for match in _INLINE.finditer(text):
        hashes[match.group(1)].append(_hash(match.group(2)))
    if not hashes["script"] or not hashes["style"]:  # a broken package, not a user error
        raise RuntimeError(f"memguard: {resource} lacks its inline <script> or <style>")
    policy = "; ".join((
        "default-src 'none'",
        "script-src " + " ".join(hashes["script"]),
        "style-src " + " ".join(hashes["style"]),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ))
    return text.encode("utf-8"), policy


def page() -> bytes:
    """The dashboard's HTML."""
    return _load()[0]


def page_headers() -> tuple[tuple[str, str], ...]:
    """The response headers of the page, content length included."""
    body, policy = _load()
    return (
        ("content-type", CONTENT_TYPE),
        ("content-length", str(len(body))),
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-cache"),
    )
