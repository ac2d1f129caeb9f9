"""Sizes of the reliability tests: CI-sized by default, full-scale with
``EVENTKERNEL_STRESS=1``."""

from __future__ import annotations

import os

STRESS = os.environ.get("EVENTKERNEL_STRESS", "") not in ("", "0")


def scale(ci: int, full: int) -> int:
    """``ci`` normally, ``full`` under EVENTKERNEL_STRESS=1."""
    return full if STRESS else ci
