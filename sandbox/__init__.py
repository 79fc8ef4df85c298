"""Fakes of WeChat's public services on 127.0.0.1, for the demo, the benchmarks and the
tests: nothing here talks to the real WeChat.

* :mod:`sandbox.webwx`: a fake web WeChat that the unmodified itchat library logs into;
* :mod:`sandbox.mpapi`: a fake official-account API (access tokens, customer-service
  messages, the menu);
* :mod:`sandbox.demo`: ``make demo``, wxreply with both fakes, each in its own process.

Every behaviour of a fake cites the public source it copies (a library's code, a
client's recorded payloads, an issue thread) in a comment next to it.
"""
