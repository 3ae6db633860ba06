"""memguard's logger, and the lines that must reach a person even when nobody set up logging.

Under plain ``python``, gunicorn and uvicorn (their default configurations), the root logger
has no handler: Python's last-resort handler then prints WARNING and above, and INFO lines are
lost. Level changes, emergencies, critical lines and "quota exceeded" are what an operator
greps for (the seed's runbook: ``grep -E "(Memory|R14|quota|exceeded)"``), so `announce`
writes them to stderr itself while no handler is configured, and hands them to logging as
usual once the app has configured any: the app keeps full control and sees each line once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

__all__ = ["announce", "logger"]

logger = logging.getLogger("memguard")


def announce(level: int, message: str, *args: Any) -> None:
    """Log `message % args` on the memguard logger; with no handler anywhere in its
    hierarchy (the app set up no logging), write it to stderr instead, whatever its level."""
    if logger.hasHandlers():
        logger.log(level, message, *args)
        return
    if logger.disabled or logging.root.manager.disable >= level:
        return
    if logger.level != logging.NOTSET and not logger.isEnabledFor(level):
        return  # memguard's own logger was given a level: someone chose what to see
    record = logger.makeRecord(logger.name, level, "(announce)", 0, message, args, None)
    if not logger.filter(record):
        return
    text = record.getMessage()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    line = f"{stamp} memguard[{os.getpid()}] {logging.getLevelName(level)}: {text}\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no usable stderr (closed, None)
        pass
