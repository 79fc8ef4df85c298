import socket

import pytest

from tests import conftest


def test_non_loopback_connect_is_refused_and_recorded() -> None:
    before = len(conftest._violations)
    with socket.socket() as sock, pytest.raises(conftest.NonLoopbackConnection):
        sock.connect(("10.1.2.3", 80))
    with pytest.raises(conftest.NonLoopbackConnection):
        socket.getaddrinfo("api.weixin.qq.com", 443)
    assert len(conftest._violations) == before + 2
    # Forget them, or the guard fixture would (rightly) fail this test.
    del conftest._violations[before:]


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert socket.getaddrinfo("localhost", 80)
