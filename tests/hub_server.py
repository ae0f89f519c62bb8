"""A minimal local stand-in for the Hugging Face hub's file endpoints (tests only).

It answers what `huggingface_hub.hf_hub_download` asks (hub 2.x, files not stored on Xet):
``HEAD`` and ``GET /{repo_id}/resolve/{revision}/{filename}`` with the ``X-Repo-Commit`` and
``ETag`` headers, ``Range`` requests for resumed downloads, and the hub's 404 error codes.
Point the client at it with ``HF_ENDPOINT=http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "5b1e2f0c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"


class FakeHub:
    """Serves `files` ({(repo_id, filename): bytes}) at one commit, on a free local port.

    Attributes
    ----------
    requests : (method, path, Range header or None) of every request, in order.
    cut_first_get_at : when set, the first full GET sends only this many bytes and drops the connection.
    """

    def __init__(self, files: dict[tuple[str, str], bytes], commit: str = COMMIT):
        self.files, self.commit = dict(files), commit
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_first_get_at: int | None = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                return None

            def _lookup(self):
                parts = unquote(self.path.split("?")[0]).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None, "EntryNotFound"
                repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if not any(r == repo for r, _ in hub.files):
                    return None, "RepoNotFound"
                if revision not in ("main", hub.commit):
                    return None, "RevisionNotFound"
                if (repo, filename) not in hub.files:
                    return None, "EntryNotFound"
                return hub.files[(repo, filename)], None

            def _answer(self, body_wanted: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                data, error = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", error)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, status = 0, 200
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    start, status = int(ranged[6:].split("-")[0]), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body_wanted:
                    return
                if hub.cut_first_get_at is not None and status == 200:
                    cut, hub.cut_first_get_at = hub.cut_first_get_at, None
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never answers: a hub that hangs (firewall, captive portal)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def online(monkeypatch, endpoint: str) -> None:
    """Let huggingface_hub use the network again (tests run with HF_HUB_OFFLINE=1) against `endpoint`."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # The product gives an unanswering hub a few seconds; the local test hub answers, but a loaded
    # test machine can take longer than that (a ReadTimeout seen at load 18). Tests of the give-up
    # path set their own short timeout.
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "30")
