"""``python -m sandbox.webwx``: the fake web WeChat as a process of its own."""

import sys

from sandbox.webwx.cli import main

main(sys.argv[1:])
