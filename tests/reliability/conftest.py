"""The reliability suite: short versions in `make test`, long ones in
`make reliability` (``WXR_RELIABILITY=long``).  Figures are recorded with the ``figures``
fixture (tests/conftest.py); ``python -m tests.reliability.report`` turns them into
docs/RELIABILITY.md.
"""

from __future__ import annotations

import os

LONG = os.environ.get("WXR_RELIABILITY") == "long"


def scale(short: int, long: int) -> int:
    return long if LONG else short
