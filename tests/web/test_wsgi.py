"""The WSGI app under load-bearing conditions (issue 12, items 4 and 10): the endpoints call
no active predicate however many jobs there are, and a token with non-ASCII characters is
compared as bytes over real HTTP.
"""

from __future__ import annotations

import http.client
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from counting import counted_store

from memguard import MemoryManager, Policy
from memguard.testing import FakeClock, FakeProbe
from memguard.web.wsgi import wsgi_app


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))




def test_the_http_endpoints_call_no_predicate(manager: MemoryManager) -> None:
    probed = MemoryManager(Policy(), clock=FakeClock(0.0), probe=FakeProbe("300MB", "512MB"))
    store, active = counted_store(probed)
    for i in range(2000):
        store[i] = {"status": "running" if i % 2 else "done", "result": "x"}
    app = wsgi_app(probed)
    active.calls = 0
    statuses: list[str] = []
    for path in ("/memory", "/metrics", "/health"):
        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                            lambda status, headers: statuses.append(status)))
        assert statuses[-1].startswith("200"), (path, statuses, body[:200])
    assert active.calls == 0


@pytest.mark.parametrize("token", ["pässwörd-€", "ascii-token"])
def test_a_non_ascii_token_matches_over_real_http(manager: MemoryManager,
                                                         token: str) -> None:
    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, wsgi_app(manager, token=token), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def post(secret: bytes) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
            try:
                connection.putrequest("POST", "/memory/cleanup")
                connection.putheader("Authorization", b"Bearer " + secret)
                connection.putheader("Content-Length", "0")
                connection.endheaders()
                return connection.getresponse().status
            finally:
                connection.close()

        assert post(token.encode("utf-8")) != 403
        assert post(token.encode("utf-8") + b"x") == 403
        if not token.isascii():
            assert post(token.encode("latin-1", "replace")) == 403
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
