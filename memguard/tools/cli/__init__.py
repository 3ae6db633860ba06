"""The `memguard` command line: one module per command."""

from memguard.tools.cli.main import build_parser, main

__all__ = [
    "build_parser",
    "main",
]
