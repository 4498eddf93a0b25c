"""Run a real nginx on 127.0.0.1 serving a directory (Range, HEAD, ETag, If-Range and 416 as in production).

Usage::

    with Nginx(root) as server:
        server.url("file.zip")            # http://127.0.0.1:PORT/file.zip
        server.requests()                 # parsed access log: method, path, range, status, bytes

``limit_rate`` throttles each connection (bytes per second), as a real mirror does.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                        if Path(p).exists()), None)

_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format zoo '$request_method $uri "$http_range" $status $body_bytes_sent';
    access_log {prefix}/access.log zoo;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {limit}
    }}
}}
"""


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    range: str
    status: int
    bytes: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    def __init__(self, root: Path, *, limit_rate: str | None = None) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.root = Path(root).resolve()
        self.limit_rate = limit_rate
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> Nginx:
        self.prefix = Path(tempfile.mkdtemp(prefix="zoo-nginx-"))
        for attempt in range(5):
            self.port = free_port()
            limit = f"limit_rate {self.limit_rate};" if self.limit_rate else ""
            conf = self.prefix / "nginx.conf"
            conf.write_text(_CONF.format(prefix=self.prefix, port=self.port, root=self.root, limit=limit))
            self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return self
            self.proc.kill()
            self.proc.wait()
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.stderr else ""
        raise RuntimeError(f"nginx did not start: {stderr}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def requests(self) -> list[LoggedRequest]:
        log = self.prefix / "access.log"
        out = []
        for line in log.read_text().splitlines() if log.exists() else []:
            method, path, rest = line.split(" ", 2)
            rng, status, sent = rest.rsplit(" ", 2)
            rng = rng.strip('"')
            out.append(LoggedRequest(method, path, "" if rng == "-" else rng, int(status), int(sent)))
        return out

    def clear_log(self) -> None:
        (self.prefix / "access.log").write_text("")
