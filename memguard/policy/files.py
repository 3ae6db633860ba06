"""Policy files: `load_policy`, the bundled policies and the environment's overrides."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

from memguard.errors import PolicyError
from memguard.policy.options import (
    ENV_POLICY,
    ENVIRONMENT,
    _suggest,
)
from memguard.policy.policy import Policy


def load_policy(
    path_or_text: Union[str, os.PathLike[str]],
    *,
    environ: Optional[Mapping[str, str]] = None,
) -> Policy:
    """A policy from a file (a path that exists or ends in `.toml`), a bundled policy's name
    (``"default"``, see `bundled_policy_names`), or TOML text.

    The environment (`environ`, default `os.environ`) overrides the file, as DESIGN section 5
    says. Raises one `PolicyError` naming the file, line, key, bad value and what is allowed.
    """
    if isinstance(path_or_text, os.PathLike) or _looks_like_path(path_or_text):
        path = Path(path_or_text)
        return Policy.from_toml(_read(path), source=os.fspath(path_or_text), environ=environ)
    if _BARE_NAME.match(path_or_text):  # one bare word is never TOML: a bundled policy's name
        path = _bundled_by_name(path_or_text.strip())
        return Policy.from_toml(_read(path), source=os.fspath(path), environ=environ)
    return Policy.from_toml(path_or_text, environ=environ)


_BARE_NAME = re.compile(r"\s*[A-Za-z0-9][A-Za-z0-9_.-]*\s*\Z")


def _bundled_by_name(name: str) -> Path:
    """The bundled policy `name`, or a PolicyError listing the names there are."""
    try:
        return bundled_policy(name)
    except FileNotFoundError:
        names = bundled_policy_names()
        hint = _suggest(name, names)
        raise PolicyError(
            f"{name!r} is neither a policy file nor a bundled policy; bundled policies: "
            f"{', '.join(names) or 'none found'}" + (f";{hint}" if hint else ""),
            source="<name>",
        ) from None


def _looks_like_path(text: str) -> bool:
    """True for a one-line string naming an existing file or ending in `.toml`."""
    if "\n" in text or "=" in text:
        return False
    stripped = text.strip()
    try:
        return stripped.endswith(".toml") or Path(stripped).is_file()
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str:
    """The text of a policy file; failures become PolicyErrors naming the file.

    Only regular files: a FIFO, device or directory is refused (opened without blocking,
    so a FIFO nobody writes to cannot hang the load)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise PolicyError("cannot read the policy: not a regular file (a FIFO, device "
                                  "or directory); expected a TOML file", source=os.fspath(path))
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                data = stream.read(MAX_POLICY_BYTES + 1)
        finally:
            os.close(descriptor)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"cannot read the policy: over {MAX_POLICY_BYTES} bytes; expected "
                              "a TOML policy file", source=os.fspath(path))
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(
            f"cannot read the policy: not UTF-8 ({error.reason} at byte {error.start}); "
            "expected a UTF-8 TOML file",
            source=os.fspath(path),
        ) from None
    except FileNotFoundError as error:
        raise PolicyError(
            f"cannot read the policy: {error.strerror or 'No such file'}; expected a TOML "
            f"policy file or {_bundled_hint(os.fspath(path))}",
            source=os.fspath(path),
        ) from None
    except OSError as error:
        raise PolicyError(
            f"cannot read the policy: {error.strerror or error}; expected a readable TOML file",
            source=os.fspath(path),
        ) from None


#: The largest policy file read (policies are a few kilobytes).
MAX_POLICY_BYTES = 1024 * 1024


def policy_from_environment(environ: Optional[Mapping[str, str]] = None) -> Policy:
    """The policy the default manager runs: the file `MEMGUARD_POLICY` names, else the
    built-in one; the other environment overrides apply on top either way."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_POLICY, "").strip()
    if not path:
        return Policy.default(env)
    if not Path(path).is_file() and path in bundled_policy_names():
        return load_policy(path, environ=env)
    if not Path(path).is_file():
        raise PolicyError(
            f"no policy file at {path!r}; expected the path of a TOML policy file or "
            f"{_bundled_hint(path)}",
            source=ENVIRONMENT,
            key=ENV_POLICY,
        )
    return load_policy(Path(path), environ=env)


def _bundled_hint(path: str) -> str:
    """`the name of a bundled policy: a, b, c (did you mean "b"?)`, naming the bundled policy
    whose name is closest to `path`'s stem: a guide written against a checkout says
    ``policies/small-dyno.toml``, a file an installed wheel does not hold."""
    names = bundled_policy_names()
    if not names:
        return "the name of a bundled policy (none found)"
    stem = Path(path).stem
    import difflib  # error paths only: not loaded by `import memguard`

    close = stem if stem in names else next(iter(difflib.get_close_matches(stem, names, 1)), "")
    return (f"the name of a bundled policy: {', '.join(names)}"
            + (f' (did you mean "{close}"?)' if close else ""))


def _bundled_dirs() -> tuple[Path, ...]:
    """Where the ready policies live: inside an installed wheel, or at the source tree root."""
    package = Path(__file__).resolve().parents[1]  # memguard/, beside its policy/ package
    return (package / "_policies", package.parent / "policies")


def bundled_policy_names() -> tuple[str, ...]:
    """The names of the ready policies shipped with memguard (`"default"`, ...), sorted."""
    for directory in _bundled_dirs():
        if directory.is_dir():
            return tuple(sorted(path.stem for path in directory.glob("*.toml")))
    return ()


def bundled_policy(name: str = "default") -> Path:
    """The path of the ready policy `name` (`"default"` or `"default.toml"`).

    Raises FileNotFoundError naming the policies there are.
    """
    filename = name if name.endswith(".toml") else f"{name}.toml"
    for directory in _bundled_dirs():
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    known = ", ".join(bundled_policy_names()) or "none found"
    raise FileNotFoundError(f"no bundled policy {name!r}; available: {known}")
