"""A real HTTP server on 127.0.0.1 for the tests, with faults that a real network produces.

Tests of downloading code should talk to a real socket: mocks of `urlopen` cannot show whether a resumed
transfer really sends `Range`, whether a connection closed mid-body is noticed, or how many bytes crossed
the wire. This server serves the files under `root`, honours single byte ranges, and can be told per path to
misbehave the way servers and networks do: fail with a status, close the connection mid-body, ignore
`Range`, lie about `Content-Length`, or stall. Every request is recorded for assertions.

    with LoopbackServer(root) as server:
        server.add_fault("big.zip", cut_after_bytes=1000, times=1)   # first request is cut
        download(server.url("big.zip"), ...)
        assert [r.range for r in server.requests] == [None, "bytes=1000-"]
"""

from __future__ import annotations

import email.utils
import http.server
import os
import re
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Fault", "LoopbackServer", "RequestRecord"]


@dataclass
class Fault:
    """How to misbehave for requests to one path.

    `times` is how many requests (GET or HEAD) the fault applies to before it is used up; None means every
    request. When a path has several faults, each request uses the first one not yet used up, so
    `add_fault(p, fail_status=503, times=1)` then `add_fault(p, cut_after_bytes=10, times=1)` makes the first
    request fail, the second one get cut, and the third one succeed.
    """

    times: int | None = None
    fail_status: int | None = None  # answer with this status and a short text body
    cut_after_bytes: int | None = None  # send full headers, then only this many body bytes, then close
    reset: bool = False  # with cut_after_bytes: abort with a TCP reset instead of a clean close
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    fake_content_length: int | None = None  # claim this Content-Length, send the real body, then close
    stall_s: float = 0.0  # pause this long before the body (with a cut: after the cut bytes), e.g. to hit a timeout
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. Retry-After

    def used_up(self) -> bool:
        return self.times is not None and self.times <= 0


@dataclass
class RequestRecord:
    """One request as the server saw and answered it."""

    method: str
    path: str  # the URL path without the leading "/", unquoted, as passed to `url()`
    range: str | None  # the Range header as sent, or None
    status: int
    # Body bytes written to the socket. Set before the headers go out, so a client that has its response
    # (or gave up on an error's body) already sees the final number; lowered if the client hung up early.
    bytes_sent: int
    headers: dict[str, str]  # request headers


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Return (first, last) inclusive for one satisfiable byte range, None to serve the whole file, or
    "unsatisfiable" for a 416. Multiple ranges and bad syntax are ignored (served whole), as RFC 9110 allows."""
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if first_text == "" and last_text == "":
        return None
    if first_text == "":  # suffix range: the last N bytes
        suffix = int(last_text)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    if first >= size or (last_text != "" and int(last_text) < first):
        return "unsatisfiable"
    return first, last


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        owner = self.server.owner
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        record = RequestRecord(
            method=self.command, path=path, range=self.headers.get("Range"), status=0, bytes_sent=0,
            headers=dict(self.headers.items()),
        )
        owner._record(record)
        fault = owner._take_fault(path)
        try:
            self._answer(record, fault, owner._resolve(path), send_body)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True  # the client went away; that is its business, not a test failure

    def _answer(self, record: RequestRecord, fault: Fault, file: Path | None, send_body: bool) -> None:
        if fault.fail_status is not None:
            return self._send_text(record, fault, fault.fail_status, f"injected failure {fault.fail_status}\n")
        if file is None:
            return self._send_text(record, fault, 404, "not found\n")
        size = file.stat().st_size
        wanted = None if fault.ignore_range else parse_range(record.range, size)
        if wanted == "unsatisfiable":
            return self._send_text(record, fault, 416, "range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
        first, last = wanted if wanted is not None else (0, size - 1)
        status = 206 if wanted is not None else 200
        length = last - first + 1
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if fault.ignore_range else "bytes")
        claimed = length if fault.fake_content_length is None else fault.fake_content_length
        self.send_header("Content-Length", str(claimed))
        self.send_header("Last-Modified", email.utils.formatdate(file.stat().st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        for name, value in fault.headers.items():
            self.send_header(name, value)
        lying = fault.fake_content_length is not None or fault.cut_after_bytes is not None
        if lying:
            self.send_header("Connection", "close")  # after a lie the connection cannot be reused
            self.close_connection = True
        to_send = length if fault.cut_after_bytes is None else min(length, fault.cut_after_bytes)
        if fault.fake_content_length is not None:
            to_send = min(to_send, fault.fake_content_length)
        record.bytes_sent = to_send if send_body else 0
        self.end_headers()
        if not send_body:
            return
        with file.open("rb") as body:
            if fault.stall_s and to_send == length:
                self.server.owner._closing.wait(fault.stall_s)
            self._send_file(record, body, first, to_send)
            if fault.stall_s and to_send < length:
                self.server.owner._closing.wait(fault.stall_s)
        if fault.cut_after_bytes is not None and to_send < length:
            self._cut(fault.reset)

    def _send_file(self, record: RequestRecord, body, offset: int, count: int) -> None:  # noqa: ANN001
        # sendfile: the body goes from the file to the socket without passing through Python.
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(self.connection.fileno(), body.fileno(), offset + sent, count - sent)
                if n == 0:
                    break
                sent += n
        finally:
            record.bytes_sent = sent

    def _cut(self, reset: bool) -> None:
        if reset:  # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True

    def _send_text(
        self, record: RequestRecord, fault: Fault, status: int, text: str, extra: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**(extra or {}), **fault.headers}.items():
            self.send_header(name, value)
        send_body = self.command != "HEAD"
        record.bytes_sent = len(data) if send_body else 0
        self.end_headers()
        if send_body:
            self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a stalled handler must not keep the test process alive
    owner: LoopbackServer

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - socketserver signature
        pass  # clients that hang up mid-body are expected here; tests assert on records, not on stderr


class LoopbackServer:
    """Serve files under `root` on 127.0.0.1 at a free port, in a daemon thread, until `close()`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.requests: list[RequestRecord] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.host, self.port = self._httpd.server_address[:2]
        # A short poll interval makes close() quick; the default 0.5 s adds up over a test suite.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-http", daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """The http:// URL of `path` (relative to root) on this server."""
        return f"http://{self.host}:{self.port}/{urllib.parse.quote(path.lstrip('/'))}"

    def add_fault(self, path: str, fault: Fault | None = None, **fields: object) -> Fault:
        """Make requests to `path` misbehave; pass a `Fault` or its fields as keywords. Returns the fault."""
        fault = fault if fault is not None else Fault(**fields)  # type: ignore[arg-type]
        with self._lock:
            self._faults.setdefault(path.lstrip("/"), []).append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_for(self, path: str, method: str | None = "GET") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path == path.lstrip("/") and method in (None, r.method)]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for `path` over all requests: what a resumed download really cost."""
        return sum(r.bytes_sent for r in self.requests_for(path, method=None))

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- used by the handler threads ---

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _take_fault(self, path: str) -> Fault:
        with self._lock:
            for fault in self._faults.get(path, []):
                if not fault.used_up():
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return Fault()

    def _resolve(self, path: str) -> Path | None:
        """The file under root for a URL path, or None (also for paths that try to leave root)."""
        candidate = (self.root / path).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate
