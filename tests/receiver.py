"""A real HTTP receiver on 127.0.0.1 for outbound-call tests (webhooks, callbacks, a stand-in Cloud API).

It records every request and answers with what ``respond(record)`` returns: a status, or
(status, body) / (status, body, headers); ``respond`` may sleep to play a slow or hanging receiver.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a sender killed or timing out mid-request is what these tests do on purpose


class Receiver:
    def __init__(self, respond: Callable[[dict], Any] | None = None, port: int = 0):
        self.respond = respond or (lambda record: 200)
        self.requests: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                record = {"method": "POST", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": self.rfile.read(length), "at": time.time()}
                with receiver._cond:
                    record["n"] = len(receiver.requests)
                    receiver.requests.append(record)
                    receiver._cond.notify_all()
                try:
                    answer = receiver.respond(record)
                except Exception:  # the test's respond() failing must still answer
                    answer = 500
                status, body, headers = (answer, b"", {}) if isinstance(answer, int) else (tuple(answer) + ({},))[:3]
                if not isinstance(body, (bytes, str)):
                    body = json.dumps(body)
                body = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller gave up (a timeout test)

            def log_message(self, *args):
                pass

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout: float = 30) -> list[dict]:
        """Waits until at least ``n`` requests arrived; returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"expected {n} requests, got {len(self.requests)} in {timeout}s")
            return list(self.requests)

    def delivery_ids(self) -> Counter:
        with self._cond:
            return Counter(r["headers"].get("x-flowbox-delivery") for r in self.requests)

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index]["body"])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
