"""A fake web WeChat on 127.0.0.1 that the unmodified itchat library logs into.

See :mod:`sandbox.webwx.protocol` for the endpoints and the test hooks.
"""

from sandbox.webwx.accounts import CGI, FakeAccount
from sandbox.webwx.messages import ACCOUNT_RESTRICTED, KINDS, SEND_TOO_OFTEN
from sandbox.webwx.protocol import (
    ENV_REFUSED_MESSAGE,
    HTML_REFUSED_PAGE,
    REFUSAL_VARIANTS,
    REFUSED_MESSAGE,
    SEND_FAILED_RET,
    FakeWebWx,
    Logout,
    SentText,
)

__all__ = [
    "ACCOUNT_RESTRICTED", "CGI", "ENV_REFUSED_MESSAGE", "HTML_REFUSED_PAGE", "KINDS",
    "REFUSAL_VARIANTS", "REFUSED_MESSAGE", "SEND_FAILED_RET", "SEND_TOO_OFTEN",
    "FakeAccount", "FakeWebWx", "Logout", "SentText",
]
