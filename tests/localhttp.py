"""A local HTTP server for tests (not collected by pytest: no ``test_`` prefix).

Network tests serve a folder from 127.0.0.1 with :func:`serve` and point kdflow at it;
:func:`dead_port` gives a port where connections are refused.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, records each request path, answers 500 to the first N requests of a path,
    and sends only the first N bytes of a cut path's file (declaring its whole length)."""

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.server.failures.get(self.path, 0) > 0:
            self.server.failures[self.path] -= 1
            self.send_error(500)
            return
        if self.path in self.server.cut:
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:self.server.cut[self.path]])
            self.close_connection = True
            return
        super().do_GET()


@contextlib.contextmanager
def serve(directory: Path, failures: dict[str, int] | None = None, cut: dict[str, int] | None = None):
    """An HTTP server on 127.0.0.1 (a free port) serving ``directory`` from a thread; ``failures``:
    path -> requests answered 500 first; ``cut``: path -> bytes sent before the connection closes."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests, server.failures, server.cut = [], dict(failures or {}), dict(cut or {})
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def dead_port() -> int:
    """A port that was just bound and closed: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
