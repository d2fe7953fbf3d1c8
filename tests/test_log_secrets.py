"""No key or token in any log line: the real log of a real ``flowbox serve`` process after WebSocket
handshakes and requests that carry credentials in their URLs (``?access_token=``, ``/ws/<token>``)."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import ServeProcess, eventually


def read_until_closed(url: str) -> int:
    with connect(url, open_timeout=30) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
        return ws.close_code


def test_no_credential_reaches_the_log(tmp_path):
    server = ServeProcess("--data-dir", str(tmp_path / "data"))
    try:
        key = server.first_key
        assert key
        ws_base = server.base.replace("http://", "ws://")
        # A browser's chat socket and event stream carry the key in the query string.
        assert read_until_closed(f"{ws_base}/chats/no-such-chat/ws?access_token={key}") == 4404
        sse = httpx.get(f"{server.base}/chats/no-such-chat/stream", params={"access_token": key}, timeout=30)
        assert sse.status_code == 404
        # A messaging socket's URL is itself a credential (single use).
        socket_token = "Zq3-socket-token-" + "x" * 16
        assert read_until_closed(f"{ws_base}/ws/{socket_token}?threadId=t1") == 4401

        eventually(lambda: "/chats/no-such-chat/ws?[redacted]" in (log := "".join(server.later)) and log.count("/ws/[redacted]") >= 2,
                   "the handshakes' lines in the log", interval=0.05)
        log = "".join(server.later)
        assert "WebSocket /chats/no-such-chat/ws?[redacted]" in log, log  # uvicorn's handshake line
        assert "WebSocket /ws/[redacted]" in log, log
        assert "WS /ws/[redacted] 101" in log, log  # flowbox's access line
        assert key not in log and key[:12] not in log
        assert socket_token not in log and "access_token" not in log
    finally:
        server.stop()
