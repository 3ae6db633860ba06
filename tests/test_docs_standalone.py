"""The published docs and the README stand on their own: they cite nothing a reader cannot see
(the design notes, issue numbers, "the seed"), link to no placeholder, and the changelog dates
the version the package carries."""

from __future__ import annotations

import re
from pathlib import Path

import memguard

ROOT = Path(__file__).resolve().parents[1]
#: The developers' record of decisions cites the design notes and issues by design; it is kept
#: in the repository and left out of the site (mkdocs.yml `exclude_docs`), so it is exempt.
UNPUBLISHED = {"docs/decisions.md"}
#: Words a reader cannot follow: the design file, issue numbers, the seed project. Matched
#: case-sensitively for the file's name, case-insensitively for the others.
FORBIDDEN = [re.compile(r"DESIGN"), re.compile(r"issue ", re.IGNORECASE),
             re.compile(r"#1"), re.compile(r"the seed", re.IGNORECASE)]
#: Lines where a forbidden word is meant otherwise: (file, text the line contains). Empty today.
ALLOWED: set[tuple[str, str]] = set()
#: Hosts that only stand for "your app" in an example command.
EXAMPLE_HOSTS = {"app.example.com"}
PLACEHOLDER = re.compile(r"example\.(com|org)|your-?(org|name|user)|OWNER|TODO", re.IGNORECASE)


def _published() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [page for page in pages if page.relative_to(ROOT).as_posix() not in UNPUBLISHED]


def test_no_page_cites_what_a_reader_cannot_see() -> None:
    found = []
    for page in _published():
        name = page.relative_to(ROOT).as_posix()
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for pattern in FORBIDDEN:
                if pattern.search(line) and not any(
                        where == name and text in line for where, text in ALLOWED):
                    found.append(f"{name}:{number}: {pattern.pattern!r} in {line.strip()}")
    assert found == []


def test_the_unpublished_record_is_out_of_the_site_and_unlinked() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    exclude = config.split("exclude_docs:", 1)[1]
    for path in UNPUBLISHED:
        relative = path.removeprefix("docs/")
        assert relative in exclude
        for page in _published():
            assert relative not in page.read_text(encoding="utf-8"), page


def test_urls_are_real_or_absent() -> None:
    bad = []
    for page in [*_published(), ROOT / "CHANGELOG.md", ROOT / "pyproject.toml"]:
        for url in re.findall(r"https?://[^\s)`\"'>\]]+", page.read_text(encoding="utf-8")):
            host = url.split("/")[2]
            if host not in EXAMPLE_HOSTS and host not in {"127.0.0.1", "localhost"} and (
                    PLACEHOLDER.search(url)):
                bad.append(f"{page.name}: {url}")
    assert bad == []


def test_the_changelog_dates_this_version_and_compares_with_nothing_unreleased() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d[^\]]*)\] - (\d{4}-\d{2}-\d{2})$", text, re.MULTILINE)
    assert releases and releases[0][0] == memguard.__version__
    if len(releases) == 1:  # the first release: nothing before it to compare with
        first = text.split(f"## [{memguard.__version__}]", 1)[1]
        assert "### Changed" not in first and "### Fixed" not in first
        assert not re.search(r"\b(was|used to|no longer|the former)\b", first), (
            "the first release compares against a state never released")
