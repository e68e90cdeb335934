"""A file server on 127.0.0.1 for the download tests: Range requests, cut connections, a refusing proxy.

``FileServer`` serves ``files`` (``{"/path": bytes}``) and records every request. Per path it can
``cut`` the first response after some bytes (to test resuming) and ``ignore_range`` (a server that
sends the whole file again). ``proxy_auth`` makes it answer every request with 407, as a proxy that
wants a login does. Extra routes (``routes``) let a test fake a JSON API such as the Hugging Face Hub's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the first response is cut
    ignore_range: bool = False
    proxy_auth: bool = False
    routes: dict[str, Callable[[Request], tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    extra_headers: Callable[[str], dict[str, str]] = lambda path: {}
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        handler = type("Handler", (_Handler,), {"state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    """Serves the files of ``state`` (a :class:`FileServer`), set per server by :meth:`FileServer.__post_init__`."""

    state: "FileServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _record(self) -> Request:
        req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        self.state.requests.append(req)
        return req

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        req = self._record()
        if self.state.proxy_auth:
            return self._send(407, {"Proxy-Authenticate": 'Basic realm="proxy"', "Content-Length": "0"}, b"", head)
        path = req.path.split("?", 1)[0]
        for prefix, route in self.state.routes.items():
            if path.startswith(prefix):
                status, headers, body = route(req)
                return self._send(status, {"Content-Length": str(len(body)), **headers}, body, head)
        if path not in self.state.files:
            return self._send(404, {"Content-Length": "0"}, b"", head)
        data = self.state.files[path]
        start, status, headers = 0, 200, dict(self.state.extra_headers(path))
        rng = req.headers.get("range", "")
        if rng.startswith("bytes=") and not self.state.ignore_range:
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return self._send(416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"}, b"", head)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        headers["Accept-Ranges"] = "bytes"
        if not head and path in self.state.cut:
            n = self.state.cut.pop(path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, headers, body, head)

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)
