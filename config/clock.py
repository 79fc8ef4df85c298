"""The wall clock, looked up at call time.

Code takes ``now=wall_clock`` rather than ``now=time.time``: a default bound to
``time.time`` at import is the real function forever, while this one follows freezegun's
patched ``time.time`` in tests, so that tests control time.
"""

import time


def wall_clock() -> float:
    return time.time()
