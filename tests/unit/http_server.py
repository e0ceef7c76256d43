"""A local HTTP server on 127.0.0.1 for the download tests (fixtures imported by the test modules).

Import ``data_server_fixture`` and ``data_no_proxy_fixture`` into a test module. ``data_server`` yields
``(base_url, state)``: put bodies in ``state.files`` under their URL path, and make the server misbehave through the
other fields of :class:`ServerState`. ``data_no_proxy`` (autouse where imported) keeps a proxy configured in the
environment from intercepting requests to 127.0.0.1.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; every request is recorded."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before dropping, first request
    fail_once: set[str] = field(default_factory=set)  # path -> one 500 answer
    ignore_range: set[str] = field(default_factory=set)
    html: set[str] = field(default_factory=set)  # served as text/html


class Handler(BaseHTTPRequestHandler):
    server: StateServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path
        state.requests.append((path, dict(self.headers)))
        if path in state.fail_once:
            state.fail_once.discard(path)
            self.send_error(500, "try again")
            return
        if path not in state.files:
            self.send_error(404, "no such file")
            return
        body = state.files[path]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and path not in state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if path in state.html else "application/x-tar")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if path in state.cut_after:
            # Promise the whole body, send part of it, drop the connection.
            payload = payload[: state.cut_after.pop(path)]
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


class StateServer(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


# The fixtures carry explicit names so that test modules import the functions (named *_fixture) and take the
# fixtures as arguments without shadowing an imported name.
@pytest.fixture(autouse=True, name="data_no_proxy")
def data_no_proxy_fixture(monkeypatch):
    # A proxy configured in the environment must not intercept requests to 127.0.0.1.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(name="data_server")
def data_server_fixture():
    server = StateServer(("127.0.0.1", 0), Handler)
    server.state = ServerState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, server.state
    server.shutdown()
    server.server_close()
