"""HTTP(S) downloads: parallel ranged parts, cross-run resume, retries and stall detection.

One :func:`fetch` call brings one URL source into ``workdir/data``, keeping ``workdir/state.json`` (the server's
validator and each part's progress) so an interrupted download — Ctrl-C, kill -9, a dropped connection —
continues where it stopped. Resumed and parallel requests carry ``If-Range`` with the validator recorded at the
start, so a file that changed upstream is detected (a 200 instead of a 206, or a new ETag) and restarted from
scratch, never spliced. The SHA-256 is computed while bytes arrive (:mod:`zoo.fetch.hashing`).

Servers that misbehave are told apart from networks that fail: a host that does not resolve or refuses the
connection fails at once (retrying cannot help); a connection that stalls, trickles below ``min_speed`` or
dribbles out its headers is dropped and retried; a server whose sizes contradict each other (416 to every range,
a body shorter than its Content-Length at the same byte every time) is reported as misconfigured; and encoded
bodies (``Content-Encoding: gzip`` although zoo asked for identity) are refused rather than stored.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from zoo._fs import file_mode, human_size, is_disk_full, require_free_space
from zoo._version import __version__
from zoo.errors import DiskSpaceError, IntegrityError, NetworkError
from zoo.fetch.base import DATA, Fetched, FetchOptions, url_label
from zoo.fetch.hashing import OrderedHasher
from zoo.fetch.probe import UNREACHABLE_HINT, exception_chain, why_unreachable
from zoo.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Source

log = logging.getLogger("zoo.fetch")

STATE_VERSION = 1
STATE = "state.json"  # next to DATA: the validator and each part's progress
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": f"zoo/{__version__}"}


@dataclasses.dataclass(frozen=True)
class Download:
    """A finished download: a complete file whose sha256 was computed while its bytes arrived."""

    path: Path
    sha256: str
    size: int
    url: str
    #: Bytes that came over the network in this run (less than ``size`` after a resume).
    fetched: int


class _Retry(Exception):
    """A transient failure: try the request again after a backoff. ``counts`` marks failures that count
    against ``max_attempts`` even though some bytes arrived (a connection too slow to ever finish)."""

    def __init__(self, reason: str, retry_after: float | None = None, *, counts: bool = False,
                 closed_at: int | None = None, early_close: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.counts = counts
        self.closed_at = closed_at  # where a clean close ended the body early
        self.early_close = early_close  # the body ended cleanly before its Content-Length


class _UpstreamChanged(Exception):
    """The file on the server is no longer the one the recorded parts came from — or, with ``inconsistent``,
    the server's own answers about its size contradict each other while its validator stays the same."""

    def __init__(self, reason: str, *, inconsistent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.inconsistent = inconsistent


class _NoRanges(Exception):
    """The server ignored a Range request although it advertised ranges."""


@dataclasses.dataclass
class _Remote:
    url: str  # after redirects
    size: int | None
    etag: str | None
    last_modified: str | None
    ranges: bool

    @property
    def validator(self) -> str | None:
        """What If-Range can carry: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclasses.dataclass
class _Part:
    start: int
    end: int | None  # exclusive; None while the size is unknown
    done: int = 0

    @property
    def offset(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.end is not None and self.offset >= self.end


def resumable(workdir: Path) -> bool:
    """Whether ``workdir`` holds an interrupted download a later run can continue (if the server still has the
    same file): a part state with size and validator, and the pre-sized data file it describes."""
    return _saved_state(workdir) is not None


def _saved_state(workdir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((workdir / STATE).read_text())
        data_size = (workdir / DATA).stat().st_size
    except (OSError, ValueError):
        return None
    if not (isinstance(state, dict) and state.get("version") == STATE_VERSION and state.get("validator")
            and isinstance(state.get("size"), int) and state["size"] == data_size and state.get("parts")):
        return None
    return state


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Fetched:
    """Download the source's URL into ``workdir/data`` (resuming what an earlier run left there) and hash it."""
    downloader = _Downloader(str(source.url), Path(workdir), options or FetchOptions(), progress, None, source.size)
    try:
        got = downloader.run()
    except BaseException:
        if downloader.started and not downloader._resumable():
            downloader._discard()  # bytes no later run can resume from: give the space back
        raise
    return Fetched({DATA: (got.sha256, got.size)}, got.fetched)


class _Downloader:
    def __init__(self, url: str, workdir: Path, options: FetchOptions, progress: ProgressCallback | None,
                 label: str | None, expected_size: int | None) -> None:
        self.url = url
        self.workdir = workdir
        self.options = options
        self.progress = progress
        self.label = label or url_label(url)
        self.expected_size = expected_size
        self.data_path = workdir / DATA
        self.state_path = workdir / STATE
        self.fetched = 0  # network bytes this run
        self._fetched_lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._local = threading.local()
        #: bytes of this run may be on disk (a failure before that leaves an earlier run's state alone)
        self.started = False

    # ------------------------------------------------------------------------------------------- driver
    def run(self) -> Download:
        self.workdir.mkdir(parents=True, exist_ok=True)
        remote = self._probe()
        changes: list[_UpstreamChanged] = []
        for restart in range(self.options.max_restarts + 1):
            try:
                return self._attempt(remote, resume=restart == 0)
            except _UpstreamChanged as exc:
                changes.append(exc)
                if exc.inconsistent:
                    log.warning("%s: the server contradicts itself (%s); starting over", self.url, exc.reason)
                else:
                    log.warning("%s changed on the server during the download (%s); starting over", self.url,
                                exc.reason)
            except _NoRanges:
                log.info("%s ignores Range requests; downloading as one stream", self.url)
                remote.ranges = False
                continue
            self._discard()
            remote = self._probe()
        if changes and all(c.inconsistent for c in changes):
            raise NetworkError(f"{self.url}: the server's answers about the file's size contradict each other "
                               f"({changes[-1].reason}), on every attempt",
                               hint="the mirror is misconfigured (wrong Content-Length or broken Range support); "
                                    "try another source (--source N)")
        raise NetworkError(f"{self.url} kept changing on the server during the download",
                           hint="the mirror is being updated; try again later or pin another source")

    def _attempt(self, remote: _Remote, *, resume: bool) -> Download:
        self.remote = remote
        self.started = True
        parts = self._load_parts(remote) if resume else None
        if parts is None:
            self._discard()
            parts = self._plan(remote)
        remaining = sum(p.end - p.offset for p in parts if p.end is not None)
        if remote.size is not None:
            require_free_space(self.workdir, remaining, f"downloading {self.label}")
        fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            if remote.size is not None and os.fstat(fd).st_size != remote.size:
                os.ftruncate(fd, remote.size)
            self.fd = fd
            self.hasher = OrderedHasher(fd)
            try:
                for part in parts:  # what earlier runs got is read back into the hash in order
                    self.hasher.wrote(part.start, length=part.done)
                self._transfer(remote, parts)
                size = parts[-1].end or 0
                if remote.size is None:  # a re-sent stream of unknown size may be shorter than the last try
                    os.ftruncate(fd, size)
                digest = self.hasher.hexdigest(size)
            finally:
                self.hasher.close()
        finally:
            os.close(fd)
        self.state_path.unlink(missing_ok=True)
        return Download(path=self.data_path, sha256=digest, size=size, url=self.url, fetched=self.fetched)

    def _plan(self, remote: _Remote) -> list[_Part]:
        """One part for small files; else segments handed out in offset order to ``connections`` workers.

        Segments (about sixteen per connection) keep the written data close behind the hash frontier, so
        hashing overlaps the transfer instead of reading most of the file back at the end.
        """
        size, opts = remote.size, self.options
        if size is None or not remote.ranges or size < opts.parallel_threshold or opts.connections <= 1:
            return [_Part(0, size)]
        step = min(max(math.ceil(size / (16 * opts.connections)), opts.min_part_size), 64 << 20)
        return [_Part(start, min(start + step, size)) for start in range(0, size, step)]

    def _transfer(self, remote: _Remote, parts: list[_Part]) -> None:
        self.remote, self.parts = remote, parts
        self._save(remote, parts)  # from the start: a full disk later can overwrite it in place
        self._stop.clear()
        self._error = None
        self._pending = collections.deque(p for p in parts if not p.complete)
        workers = min(self.options.connections, len(self._pending)) if len(parts) > 1 else len(self._pending)
        threads = [threading.Thread(target=self._worker_loop, name=f"zoo-conn-{i}", daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        last_save = time.monotonic()
        try:
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(0.1)
                self._report(parts, remote.size)
                if time.monotonic() - last_save > 0.25:
                    self._save(remote, parts)
                    last_save = time.monotonic()
        except BaseException:  # Ctrl-C: stop the parts, keep what they got
            self._stop.set()
            for t in threads:
                t.join(5)
            self._save(remote, parts)
            raise
        self._report(parts, remote.size)
        if self._error is not None:
            self._save(remote, parts)
            raise self._error

    def _report(self, parts: list[_Part], total: int | None) -> None:
        if self.progress is not None:
            done = sum(p.done for p in parts)
            self.progress(ProgressEvent("download", self.label, done=done, total=total))

    # ------------------------------------------------------------------------------------------- parts
    def _worker_loop(self) -> None:
        """One connection: take the lowest pending part until none is left."""
        while not self._stop.is_set():
            try:
                part = self._pending.popleft()
            except IndexError:
                return
            self._worker(part)

    def _worker(self, part: _Part) -> None:
        failures = 0
        last_close: int | None = None
        while not part.complete and not self._stop.is_set():
            before = part.done
            try:
                if self._fetch(part):
                    return
            except _Retry as exc:
                failures = failures + 1 if exc.counts or part.done <= before else 0
                if exc.closed_at is not None and exc.closed_at == last_close:
                    self._fail(NetworkError(
                        f"{self.url}: the server announces {self._announced(part)} but ends the body after "
                        f"byte {exc.closed_at} every time", hint="the mirror misreports the file's size "
                        "(Content-Length); try another source (--source N)"))
                    return
                last_close = exc.closed_at
                if failures >= self.options.max_attempts:
                    self._fail(NetworkError(
                        f"{self.url}: gave up after {failures} failed attempts "
                        f"(bytes {part.offset}-{'' if part.end is None else part.end - 1}): {exc.reason}",
                        hint="check the connection, or retry later" + (": what arrived so far is kept"
                                                                        if self._resumable() else "")))
                    return
                delay = self._backoff(failures, exc.retry_after)
                log.info("%s: %s; retrying bytes from %d in %.1fs", self.label, exc.reason, part.offset, delay)
                self._stop.wait(delay)
            except OSError as exc:
                if is_disk_full(exc):
                    self._fail(self._disk_full())
                else:
                    self._fail(exc)
                return
            except BaseException as exc:
                self._fail(exc)
                return

    def _resumable(self) -> bool:
        remote = getattr(self, "remote", None)
        return bool(remote is not None and remote.size is not None and remote.ranges and remote.validator)

    def _announced(self, part: _Part) -> str:
        if part.end is None:
            return "a longer body"
        return f"{part.end - part.start} bytes for bytes {part.start}-{part.end - 1}"

    def _disk_full(self) -> DiskSpaceError:
        if self._resumable():
            return DiskSpaceError(f"the disk filled up while downloading {self.label} into {self.workdir}",
                                  hint="free some space (`zoo cache prune`) and pull again: the download resumes "
                                       "from what is kept")
        return DiskSpaceError(f"the disk filled up while downloading {self.label} into {self.workdir}",
                              hint="this server gives no size and validator, so the download cannot resume and "
                                   "its bytes were deleted; free some space and pull again")

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop.set()

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        opts = self.options
        delay: float = min(opts.backoff_max, opts.backoff_base * 2 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, opts.retry_after_max))
        return delay

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
        return session

    def _fetch(self, part: _Part) -> bool:
        """One request for the rest of ``part``; True when the part is complete."""
        remote, opts = self.remote, self.options
        headers: dict[str, str] = {}
        ranged = remote.ranges and remote.size is not None
        if ranged:
            headers["Range"] = f"bytes={part.offset}-{part.end - 1}"  # type: ignore[operator]
            if remote.validator:
                headers["If-Range"] = remote.validator
        elif part.done:
            self._restart_stream(part)
        with _request(self._session(), "GET", remote.url, headers, opts, stream=True) as resp:
            if ranged:
                self._check_ranged(resp, part)
            try:
                for chunk in resp.iter_content(opts.chunk_size, opts):
                    if self._stop.is_set():
                        return False
                    if part.end is not None and part.offset + len(chunk) > part.end:
                        raise _Retry(f"server sent more than the {part.end - part.start} bytes asked for")
                    _pwrite_all(self.fd, chunk, part.offset)
                    self.hasher.wrote(part.offset, chunk)
                    part.done += len(chunk)
                    with self._fetched_lock:
                        self.fetched += len(chunk)
            except _Retry as exc:
                if exc.early_close and exc.closed_at is None:
                    exc.closed_at = part.offset  # a clean close before Content-Length: where, to compare
                raise
        if self._stop.is_set():
            return False
        if part.end is None:  # size unknown: the stream ending cleanly is the end of the file
            part.end = part.offset
        elif part.offset < part.end:
            raise _Retry(f"connection closed after {part.done} of {part.end - part.start} bytes",
                         closed_at=part.offset)
        return True

    def _check_ranged(self, resp: requests.Response, part: _Part) -> None:
        remote = self.remote
        etag = resp.headers.get("ETag")
        if resp.status_code == 206:
            if remote.etag and etag and etag != remote.etag:
                raise _UpstreamChanged(f"ETag {remote.etag} became {etag}")
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != part.offset or (m.group(3) != "*" and int(m.group(3)) != remote.size):
                same = remote.validator is not None and remote.validator in (etag, resp.headers.get("Last-Modified"))
                raise _UpstreamChanged(f"Content-Range {resp.headers.get('Content-Range')!r} does not match "
                                       f"bytes={part.offset}- of {remote.size}", inconsistent=same)
            return
        # 200: the whole file. Either If-Range failed (changed upstream) or ranges are not supported.
        if (remote.etag and etag and etag != remote.etag) or (
                remote.last_modified and resp.headers.get("Last-Modified", remote.last_modified)
                != remote.last_modified):
            raise _UpstreamChanged(f"ETag {remote.etag} became {etag}" if etag else "Last-Modified changed")
        if len(self.parts) == 1 and part.start == 0:
            self._restart_stream(part)
            return
        raise _NoRanges()

    def _restart_stream(self, part: _Part) -> None:
        """The server sends the whole file again: drop what this single part had and re-hash from zero."""
        self.hasher.close()
        self.hasher = OrderedHasher(self.fd)
        part.done = 0

    # --------------------------------------------------------------------------------------- metadata
    def _probe(self) -> _Remote:
        """HEAD the URL (following redirects) for its size, validator and Range support."""
        failures = 0
        while True:
            try:
                with _request(self._session(), "HEAD", self.url, {}, self.options) as resp:
                    h = resp.headers
                    size = int(h["Content-Length"]) if h.get("Content-Length", "").isdigit() else None
                    remote = _Remote(url=resp.url, size=size, etag=h.get("ETag"),
                                     last_modified=h.get("Last-Modified"),
                                     ranges=h.get("Accept-Ranges", "").lower() == "bytes")
                    break
            except _Retry as exc:
                failures += 1
                if failures >= self.options.max_attempts:
                    raise NetworkError(f"{self.url}: {exc.reason} ({failures} attempts)",
                                       hint="check the connection or try another source (--source N)") from None
                time.sleep(self._backoff(failures, exc.retry_after))
            except NetworkError as exc:
                if "HTTP 405" not in exc.message and "HTTP 501" not in exc.message:
                    raise
                return _Remote(url=self.url, size=None, etag=None, last_modified=None, ranges=False)
        if self.expected_size is not None and remote.size is not None and remote.size != self.expected_size:
            raise IntegrityError(f"{self.url}: the server reports {remote.size} bytes, the manifest pins "
                                 f"{self.expected_size}", hint="the file changed upstream or the manifest is wrong; "
                                 "nothing was downloaded")
        return remote

    # ------------------------------------------------------------------------------------------ state
    def _load_parts(self, remote: _Remote) -> list[_Part] | None:
        """The parts recorded by an interrupted earlier run, if they still describe this remote file."""
        state = _saved_state(self.workdir)
        if state is None:
            return None
        same = (state.get("url") == self.url and remote.validator and state["validator"] == remote.validator
                and state["size"] == remote.size and remote.ranges)
        if not same:
            if state.get("validator") != remote.validator:
                log.info("%s changed on the server since the interrupted download; starting over", self.url)
            return None
        parts = [_Part(int(s), int(e), int(d)) for s, e, d in state["parts"]]
        log.info("resuming %s: %d of %d bytes already here", self.label, sum(p.done for p in parts), remote.size)
        return parts

    def _save(self, remote: _Remote, parts: list[_Part]) -> None:
        """Record each part's progress in ``state.json`` (atomically). The file is padded to a size that any
        later state fits in, so when the disk is full — the moment the state matters most — it can still be
        overwritten in place, in blocks it already owns, and the download stays resumable."""
        if remote.size is None or not remote.ranges or not remote.validator:
            return  # not resumable across runs
        state: dict[str, Any] = {"version": STATE_VERSION, "url": self.url, "size": remote.size,
                                 "validator": remote.validator,
                                 "parts": [[p.start, p.end, p.done] for p in parts]}
        text = json.dumps(state)
        widest = json.dumps({**state, "parts": [[p.start, p.end, (p.end or 0) - p.start] for p in parts]})
        room = -(-(len(widest) + 256) // 4096) * 4096
        data = (text + " " * (room - len(text))).encode()
        tmp = self.state_path.with_name(f"state.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.state_path)
        except OSError as exc:  # a full disk must not hide the error that stopped the download
            tmp.unlink(missing_ok=True)
            if not is_disk_full(exc):
                raise
            self._save_in_place(data)

    def _save_in_place(self, data: bytes) -> None:
        try:
            with open(self.state_path, "r+b") as fh:
                if os.fstat(fh.fileno()).st_size >= len(data):
                    fh.write(data.ljust(os.fstat(fh.fileno()).st_size))
        except OSError:
            pass  # no earlier state to overwrite: the next run starts over

    def _discard(self) -> None:
        self.state_path.unlink(missing_ok=True)
        self.data_path.unlink(missing_ok=True)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _Watch:
    """The connection a request is using, so a deadline can cut it (see :class:`_Adapter`)."""

    conn: Any = None


_current = threading.local()


def _watched(pool_cls: type) -> type:
    class Watched(pool_cls):  # type: ignore[misc]
        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            watch = getattr(_current, "watch", None)
            if watch is not None:
                watch.conn = conn
            return conn

    return Watched


_POOLS = {"http": _watched(urllib3.HTTPConnectionPool), "https": _watched(urllib3.HTTPSConnectionPool)}


class _Adapter(HTTPAdapter):
    """requests' adapter with connection pools that tell :func:`_request` which connection a request uses.

    requests has no deadline for a response's headers (its read timeout restarts with every byte), so a server
    that dribbles headers out a byte at a time would hold a download forever; a timer shuts that connection's
    socket down instead.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers.update(_HEADERS)
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _request(session: requests.Session, method: str, url: str, headers: dict[str, str], options: FetchOptions,
             *, stream: bool = False) -> Any:
    """Send one request; transient failures raise :class:`_Retry`, permanent ones NetworkError."""
    watch = _Watch()
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        sock = getattr(watch.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(options.header_timeout, cut)
    timer.daemon = True
    _current.watch = watch
    timer.start()
    try:
        resp = session.request(method, url, headers=headers, stream=stream, allow_redirects=True,
                               timeout=(options.connect_timeout, options.stall_timeout))
    except requests.exceptions.TooManyRedirects as exc:
        raise NetworkError(f"{url}: too many redirects", hint="the mirror is misconfigured") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        if fired.is_set():
            raise _Retry(f"the response headers took longer than {options.header_timeout:g}s", counts=True) from None
        fatal = _unreachable(url, exc)
        if fatal is not None:
            raise fatal from None
        raise _Retry(_describe(exc)) from None
    except requests.RequestException as exc:
        raise NetworkError(f"{url}: {_describe(exc)}") from None
    finally:
        timer.cancel()
        _current.watch = None
    if resp.status_code in _RETRY_STATUS:
        resp.close()
        raise _Retry(f"HTTP {resp.status_code}", _retry_after(resp.headers.get("Retry-After")))
    if resp.status_code == 416 and "Range" in headers:
        resp.close()
        raise _UpstreamChanged(f"416 Range Not Satisfiable for {headers['Range']}: the server says the file is "
                               f"shorter than it announced ({resp.headers.get('Content-Range', 'no size given')})",
                               inconsistent=True)
    if resp.status_code >= 400:
        resp.close()
        raise NetworkError(f"{url}: HTTP {resp.status_code} {resp.reason}",
                           hint="the URL may have moved; try another source (--source N)")
    _refuse_encoded(url, resp)
    return _StreamGuard(resp)


def _refuse_encoded(url: str, resp: requests.Response) -> None:
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        resp.close()
        raise NetworkError(f"{url}: the server sent the file with Content-Encoding: {encoding} although zoo asked "
                           "for the unencoded bytes (Accept-Encoding: identity); zoo never stores or pins encoded "
                           "bytes",
                           hint="a misconfigured server or proxy is compressing downloads; try another source "
                                "(--source N) or bypass the proxy")


def _unreachable(url: str, exc: BaseException) -> NetworkError | None:
    """A NetworkError for failures that retrying cannot fix: the host does not resolve, or refuses connections."""
    host = urlsplit(url).hostname or url
    port = urlsplit(url).port
    why = why_unreachable(exc)
    if why == "unresolved":
        return NetworkError(f"{url}: cannot resolve the host {host} (no network, or no DNS)", hint=UNREACHABLE_HINT)
    if why == "refused":
        where = f"{host}:{port}" if port else host
        return NetworkError(f"{url}: {where} refused the connection",
                            hint="is the server (or mirror) running? to use only what is cached set ZOO_OFFLINE=1 "
                                 "(--offline)")
    return None


class _StreamGuard:
    """Wrap a streaming response so read errors in ``iter_content`` become :class:`_Retry`."""

    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)

    def __enter__(self) -> _StreamGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self._resp.close()

    def iter_content(self, chunk_size: int, options: FetchOptions) -> Any:
        """Body chunks of up to ``chunk_size`` bytes as they arrive (``read1``: no waiting to fill a chunk, so
        progress, part state and stall detection stay fine-grained on slow links). A body slower than
        ``options.min_speed`` over ``options.speed_window`` seconds raises a :class:`_Retry` that counts."""
        raw = self._resp.raw
        window_start, window_bytes = time.monotonic(), 0
        try:
            while chunk := raw.read1(chunk_size):
                yield chunk
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start >= options.speed_window:
                    rate = window_bytes / (now - window_start)
                    if rate < options.min_speed:
                        raise _Retry(f"too slow: {human_size(rate)}/s over {now - window_start:.0f}s (minimum "
                                     f"{human_size(options.min_speed)}/s, ZOO_MIN_SPEED)", counts=True)
                    window_start, window_bytes = now, 0
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise _Retry(_describe(exc), early_close=_incomplete_read(exc)) from None


def _incomplete_read(exc: BaseException) -> bool:
    """Whether the server closed the connection cleanly before the Content-Length it announced."""
    return any(type(cause).__name__ == "IncompleteRead" for cause in exception_chain(exc, reasons=False))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if "timed out" in text.lower() or isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "stalled: no data within the stall timeout (ZOO_STALL_TIMEOUT)"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection broken mid-body"
    if "Connection reset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the server closed the connection"
    return f"connection error ({type(exc).__name__})"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
