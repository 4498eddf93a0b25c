"""A fault-injecting HTTP/1.1 server on 127.0.0.1 for download tests.

Each path serves bytes with HEAD, Range, ETag and If-Range like a static file server, and can misbehave on
purpose, one scripted :class:`Fault` per GET request (in order)::

    with FaultServer() as srv:
        url = srv.add("/m.zip", data, faults=[Fault("reset", at=1000), Fault("status", status=503, retry_after="1")])
        ...
        srv.log          # every request: method, path, range, status, body bytes sent

Fault kinds: ``reset`` (TCP RST after ``at`` body bytes), ``truncate`` (close cleanly after ``at`` bytes although
Content-Length promised more), ``stall`` (send ``at`` bytes, then nothing for ``seconds``), ``status`` (answer
``status`` with an optional Retry-After), ``pause`` (send ``at`` bytes, set ``reached``, wait for ``release``,
then send the rest: a test acts while a download is certainly in progress, without sleeping on a guess).

Route options: ``ranges=False`` (ignore Range, no Accept-Ranges), ``change_after=N`` (after N GETs the file is
replaced by ``changed_data`` with a new ETag), ``rate`` (bytes/s per connection), ``unknown_size`` (no
Content-Length, no ETag, no ranges: the body ends when the connection closes), ``encoding`` (a
``Content-Encoding`` header, the body gzip-compressed, whatever the client asked for), ``claimed_size`` (announce
this size in Content-Length and Content-Range but have only ``data``), ``always_416`` (every Range request gets
416), ``trickle=(n, seconds)`` (``n`` body bytes every ``seconds``), ``header_trickle`` (seconds between the
bytes of the response headers), ``content_type``; and :meth:`FaultServer.redirect` for redirect chains.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Fault:
    kind: str  # reset | truncate | stall | status
    at: int = 0
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    reached: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class Route:
    data: bytes
    etag: str = '"v1"'
    ranges: bool = True
    faults: list[Fault] = dataclasses.field(default_factory=list)
    change_after: int | None = None
    changed_data: bytes | None = None
    rate: int | None = None
    redirect: str | None = None
    unknown_size: bool = False
    encoding: str | None = None
    claimed_size: int | None = None
    always_416: bool = False
    trickle: tuple[int, float] | None = None
    header_trickle: float | None = None
    content_type: str | None = None
    gets: int = 0


@dataclasses.dataclass(frozen=True)
class Logged:
    method: str
    path: str
    range: str
    status: int
    sent: int


class FaultServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.active = 0  # requests being answered
        self.streamed = 0  # body bytes written so far, including requests still in flight

    def wait_idle(self, timeout: float = 10) -> None:
        """Wait until no request is being answered (a killed client's requests are logged when they end)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    # ------------------------------------------------------------------------------------------- setup
    def add(self, path: str, data: bytes, **options: object) -> str:
        self.routes[path] = Route(data=data, **options)  # type: ignore[arg-type]
        return self.url(path)

    def redirect(self, path: str, to: str, status: int = 302) -> str:
        self.routes[path] = Route(data=b"", redirect=to, etag=str(status))
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def sent(self, path: str | None = None) -> int:
        """Body bytes sent (for one path)."""
        return sum(e.sent for e in self.log if path is None or e.path == path)

    def gets(self, path: str) -> list[Logged]:
        return [e for e in self.log if e.method == "GET" and e.path == path]

    def __enter__(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            owner = server

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that reset or vanish are what these tests are about


class _Handler(BaseHTTPRequestHandler):
    owner: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _record(self, status: int, sent: int) -> None:
        with self.owner.lock:
            self.owner.log.append(Logged(self.command, self.path, self.headers.get("Range", ""), status, sent))

    def _serve(self, *, head: bool) -> None:
        with self.owner.lock:
            self.owner.active += 1
        try:
            self._answer(head=head)
        finally:
            with self.owner.lock:
                self.owner.active -= 1

    def _answer(self, *, head: bool) -> None:
        route = self.owner.routes.get(self.path)
        if route is None:
            self._simple(404)
            return
        if route.redirect is not None:
            self.send_response(int(route.etag))
            self.send_header("Location", self.owner.url(route.redirect))
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._record(int(route.etag), 0)
            return
        fault = None
        if not head:
            with self.owner.lock:
                route.gets += 1
                if route.change_after is not None and route.gets > route.change_after and route.changed_data:
                    route.data, route.etag, route.changed_data = route.changed_data, '"v2"', None
                fault = route.faults.pop(0) if route.faults else None
        if fault is not None and fault.kind == "status":
            self._simple(fault.status, retry_after=fault.retry_after)
            return
        data = gzip.compress(route.data, mtime=0) if route.encoding else route.data
        size = route.claimed_size if route.claimed_size is not None else len(data)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        ranges = route.ranges and not route.unknown_size
        if rng and ranges:
            if route.always_416:
                self._simple(416, content_range=f"bytes */{size}")
                return
            if_range = self.headers.get("If-Range")
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m and (if_range is None or if_range == route.etag):
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                if start >= size:
                    self._simple(416, content_range=f"bytes */{size}")
                    return
                status = 206
        headers = [("Content-Length", str(end - start))] if not route.unknown_size else [("Connection", "close")]
        if not route.unknown_size:
            headers.append(("ETag", route.etag))
        if ranges:
            headers.append(("Accept-Ranges", "bytes"))
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        if route.encoding:
            headers.append(("Content-Encoding", route.encoding))
        if route.content_type:
            headers.append(("Content-Type", route.content_type))
        if route.header_trickle is not None:
            self._trickle_headers(status, headers, route.header_trickle)
            return
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if head:
            self._record(status, 0)
            return
        if route.unknown_size:
            self.close_connection = True
        self._send_body(data[start:min(end, len(data))], route, fault, status)

    def _trickle_headers(self, status: int, headers: list[tuple[str, str]], pause: float) -> None:
        """Send the status line and headers one byte at a time, ``pause`` seconds apart, then give up."""
        raw = f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.close_connection = True
        sent = 0
        try:
            for byte in raw.encode():
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                sent += 1
                time.sleep(pause)
        except OSError:
            pass
        finally:
            self._record(status, 0)

    def _send_body(self, body: bytes, route: Route, fault: Fault | None, status: int) -> None:
        limit = len(body) if fault is None or fault.kind == "pause" else min(fault.at, len(body))
        step, t0 = 64 << 10, time.monotonic()
        if route.trickle is not None:
            step = route.trickle[0]
        sent = 0
        try:
            while sent < limit:
                if fault is not None and fault.kind == "pause" and sent <= fault.at < sent + step:
                    if fault.at > sent:
                        self.wfile.write(body[sent:fault.at])
                        self.owner.streamed += fault.at - sent
                        sent = fault.at
                    self.wfile.flush()
                    fault.reached.set()
                    fault.release.wait(30)
                    fault = None
                    continue
                chunk = body[sent:min(limit, sent + step)]
                self.wfile.write(chunk)
                sent += len(chunk)
                self.owner.streamed += len(chunk)
                if route.trickle is not None:
                    self.wfile.flush()
                    time.sleep(route.trickle[1])
                elif route.rate:
                    ahead = sent / route.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if fault is not None or route.claimed_size is not None or route.unknown_size:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR) if fault is None or fault.kind != "reset" else None
        except OSError:
            pass  # the client went away (killed, interrupted): normal in these tests
        finally:
            self._record(status, sent)

    def _simple(self, status: int, *, retry_after: str | None = None, content_range: str | None = None) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        if content_range is not None:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status, 0)
