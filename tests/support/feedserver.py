"""A local HTTP feed server on 127.0.0.1 for tests and benchmarks: real sockets, real HTTP/1.1.

It serves files under a root folder (by default the shared corpus, read in place) with a strong
``ETag`` and a ``Last-Modified`` per document, and answers conditional requests with 304. Any path
can be given a :class:`Behaviour` to misbehave the way real feed servers do.

API (everything else is private)::

    with FeedServer(root) as server:            # starts on a free port; stop() on exit
        url = server.url("feeds/bbc-world-2026-02-18.xml")
        server.url("feeds/x.xml", copy=3)       # same file under a distinct URL (/copy/3/...)
        server.put("mine.xml", b"<rss>...", content_type="application/rss+xml")
        server.behave("feeds/x.xml", slow(2.0))  # or rate_limited(), error(500), redirect(...),
                                                 # oversize(...), gzipped(), gzip_bomb(...),
                                                 # no_validators()
        server.clear("feeds/x.xml")              # back to normal
        server.requests_for("feeds/x.xml")       # [Seen(path, status, headers)], in order
        server.wait_for_requests(10, timeout=5)  # block until that many requests were answered
        server.peak_in_flight()                  # most requests answered at once (concurrency)

Paths are relative to the root, without a leading slash. ``/copy/N/REST`` serves ``REST``: the
benchmark uses it to present K copies of the corpus as K distinct feeds.

Run as a program (``python -m tests.support.feedserver --root DIR --host 127.0.0.1 ...``) it
prints one JSON line ``{"urls": [base URL per host]}`` and serves until its stdin closes, so a
benchmark can keep the server in a separate process.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import mimetypes
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

_EPOCH_LM = datetime(2026, 1, 1, tzinfo=UTC)
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one path answers. The default is the normal conditional-GET document."""

    status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering (the wait ends early when the server stops)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    location: str | None = None
    gzip: bool = False
    oversize: int | None = None
    """Send this many bytes of filler instead of the document."""
    declare_length: bool = True
    bomb: int | None = None
    """Send a gzip body that inflates to this many bytes (zeros)."""
    validators: bool = True
    """Send ETag/Last-Modified and answer conditional requests with 304."""


def slow(seconds: float) -> Behaviour:
    """Answer normally, but only after ``seconds``."""
    return Behaviour(delay=seconds)


def rate_limited(retry_after: str = "120", status: int = 429) -> Behaviour:
    """429 (or 503) with ``Retry-After`` (seconds or an HTTP date)."""
    return Behaviour(status=status, headers={"Retry-After": retry_after})


def error(status: int = 500) -> Behaviour:
    """A bare error status (500, 404, 410, 403...)."""
    return Behaviour(status=status)


def redirect(location: str, status: int = 301) -> Behaviour:
    """A redirect (301, 302, 307, 308) to ``location`` (absolute, or a path on this server)."""
    return Behaviour(status=status, location=location)


def oversize(size: int, *, declare_length: bool = True) -> Behaviour:
    """A ``size``-byte body; with ``declare_length=False`` no Content-Length (read to close)."""
    return Behaviour(oversize=size, declare_length=declare_length)


def gzipped() -> Behaviour:
    """The document with ``Content-Encoding: gzip``."""
    return Behaviour(gzip=True)


def no_validators() -> Behaviour:
    """The document without ETag/Last-Modified: every request gets the full body."""
    return Behaviour(validators=False)


def gzip_bomb(inflated_size: int) -> Behaviour:
    """A small gzip body that inflates to ``inflated_size`` bytes."""
    return Behaviour(bomb=inflated_size)


@dataclass(frozen=True, slots=True)
class Seen:
    """One answered request."""

    path: str
    status: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Document:
    body: bytes
    content_type: str
    etag: str
    last_modified: datetime


def _make_document(body: bytes, content_type: str, version: int) -> _Document:
    digest = hashlib.sha256(body).hexdigest()[:20]
    return _Document(body, content_type, f'"{digest}"', _EPOCH_LM + timedelta(seconds=version))


class FeedServer:
    """See the module docstring."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ) -> None:
        self.root = root
        self._host = host
        self._port = port
        self._record = record
        self._lock = threading.Condition()
        self._behaviours: dict[str, Behaviour] = {}
        self._documents: dict[str, _Document] = {}
        self._versions = 0
        self._seen: list[Seen] = []
        self._in_flight = 0
        self._peak_in_flight: dict[str, int] = {}
        self._stopping = threading.Event()
        self._bombs: dict[int, bytes] = {}
        self._gzip_cache: dict[str, bytes] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> FeedServer:
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        self._httpd = _QuietServer((self._host, self._port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.end_connections()
            self._httpd.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- configuration ----------------------------------------------------------------------
    def url(self, path: str, *, copy: int | None = None) -> str:
        prefix = f"/copy/{copy}" if copy is not None else ""
        return f"{self.base_url}{prefix}/{path.lstrip('/')}"

    def put(self, path: str, body: bytes, content_type: str = "application/rss+xml") -> None:
        """Serve ``body`` at ``path`` (replacing a file or an earlier put); the ETag and
        Last-Modified change with the content."""
        with self._lock:
            self._versions += 1
            self._documents[path.lstrip("/")] = _make_document(body, content_type, self._versions)
            self._gzip_cache.pop(path.lstrip("/"), None)

    def behave(self, path: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[path.lstrip("/")] = behaviour

    def clear(self, path: str) -> None:
        with self._lock:
            self._behaviours.pop(path.lstrip("/"), None)

    # -- what happened ----------------------------------------------------------------------
    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def requests_for(self, path: str) -> list[Seen]:
        wanted = path.lstrip("/")
        return [seen for seen in self.requests if seen.path == wanted]

    def peak_in_flight(self, host: str = "") -> int:
        """Most requests this server was answering at once (optionally: per ``Host`` header)."""
        with self._lock:
            return self._peak_in_flight.get(host, 0)

    def wait_for_requests(self, count: int, *, timeout: float) -> bool:
        """Block until ``count`` requests in total were answered; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._seen) >= count, timeout=timeout)

    # -- internals used by the handler ----------------------------------------------------
    def _enter(self, host: str) -> None:
        with self._lock:
            self._in_flight += 1
            for key in ("", host):
                self._peak_in_flight[key] = max(self._peak_in_flight.get(key, 0), self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _note(self, path: str, status: int, headers: Mapping[str, str]) -> None:
        with self._lock:
            if self._record:
                self._seen.append(Seen(path, status, dict(headers)))
            self._lock.notify_all()

    def _lookup(self, path: str) -> tuple[Behaviour, _Document | None]:
        with self._lock:
            behaviour = self._behaviours.get(path, Behaviour())
            document = self._documents.get(path)
        if document is None and self.root is not None:
            file = (self.root / path).resolve()
            if self.root.resolve() in file.parents and file.is_file():
                body = file.read_bytes()
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if kind in ("text/xml", "application/xml"):
                    kind = "application/xml"
                document = _make_document(body, kind, int(file.stat().st_mtime) % 10**6)
        return behaviour, document

    def _gzip(self, path: str, body: bytes) -> bytes:
        with self._lock:
            cached = self._gzip_cache.get(path)
        if cached is None:
            cached = gzip.compress(body, mtime=0)
            with self._lock:
                self._gzip_cache[path] = cached
        return cached

    def _bomb(self, size: int) -> bytes:
        with self._lock:
            cached = self._bombs.get(size)
        if cached is None:
            packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            block = bytes(_CHUNK * 16)
            parts, left = [], size
            while left > 0:
                take = min(left, len(block))
                parts.append(packer.compress(block[:take]))
                left -= take
            parts.append(packer.flush())
            cached = b"".join(parts)
            with self._lock:
                self._bombs[size] = cached
        return cached


class _QuietServer(ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can end them and join every handler thread: no
    socket is left for the garbage collector (a ResourceWarning, an error under pytest)."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        """Wake handler threads waiting on idle keep-alive connections."""
        with self._open_lock:
            open_now = list(self._open)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client closing its connection (caps, timeouts, pooled sockets) is normal here;
        anything else is still printed by the default handler."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def _strip_copy(path: str) -> str:
    parts = path.split("/", 2)
    if len(parts) == 3 and parts[0] == "copy" and parts[1].isdigit():
        return parts[2]
    return path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FeedServer
    _raw_path = ""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read ``FeedServer.requests`` instead."""

    def do_GET(self) -> None:
        state = self.server_state
        raw_path = unquote(urlsplit(self.path).path).lstrip("/")
        path = _strip_copy(raw_path)
        behaviour, document = state._lookup(path)
        self._raw_path = raw_path
        state._enter(self.headers.get("Host", ""))
        try:
            if behaviour.delay and state._stopping.wait(behaviour.delay):
                return
            self._answer(state, path, behaviour, document)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (size caps, timeouts): what the tests provoke
        finally:
            state._leave()

    def _headers_done(self, status: int) -> None:
        """Record the request, then send the headers: a client that has the answer always finds
        its request in ``FeedServer.requests``."""
        self.server_state._note(self._raw_path, status, dict(self.headers.items()))
        self.end_headers()

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> int:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self._headers_done(status)
        if body:
            self.wfile.write(body)
        return status

    def _answer(
        self, state: FeedServer, path: str, behaviour: Behaviour, document: _Document | None
    ) -> int:
        extra = dict(behaviour.headers)
        if behaviour.location is not None:
            location = behaviour.location
            if location.startswith("/"):
                location = state.base_url + location
            return self._send(behaviour.status, b"", {**extra, "Location": location})
        if behaviour.status != 200:
            return self._send(behaviour.status, f"status {behaviour.status}\n".encode(), extra)
        if behaviour.oversize is not None:
            return self._stream_filler(behaviour.oversize, behaviour.declare_length)
        if behaviour.bomb is not None:
            body = state._bomb(behaviour.bomb)
            return self._send(
                200, body, {**extra, "Content-Type": "application/xml", "Content-Encoding": "gzip"}
            )
        if document is None:
            return self._send(404, b"not found\n", {"Content-Type": "text/plain"})
        validators = {
            "ETag": document.etag,
            "Last-Modified": format_datetime(document.last_modified, usegmt=True),
        }
        if not behaviour.validators:
            validators = {}
        elif self._not_modified(document):
            return self._send(304, b"", {**validators, **extra})
        headers = {"Content-Type": document.content_type, **validators, **extra}
        body = document.body
        if behaviour.gzip:
            body = state._gzip(path, body)
            headers["Content-Encoding"] = "gzip"
        return self._send(200, body, headers)

    def _not_modified(self, document: _Document) -> bool:
        tags = self.headers.get("If-None-Match")
        if tags is not None:
            return document.etag in [t.strip() for t in tags.split(",")] or tags.strip() == "*"
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                return parsedate_to_datetime(since) >= document.last_modified
            except (TypeError, ValueError):
                return False
        return False

    def _stream_filler(self, size: int, declare_length: bool) -> int:
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        if declare_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_done(200)
        block = b"<!-- filler -->" * (_CHUNK // 15)
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            self.wfile.write(piece)
            left -= len(piece)
        return 200


def iter_hosts(spec: str) -> Iterator[str]:
    for host in spec.split(","):
        if host.strip():
            yield host.strip()


@contextlib.contextmanager
def serving_in_process(root: Path, hosts: str = "127.0.0.1") -> Iterator[list[str]]:
    """Run this server as a program in a process of its own (so its CPU is not the caller's, as a
    benchmark needs), serving ``root`` on each of the comma-separated ``hosts``; yield the base
    URL per host, and stop the process when the block ends."""
    repo = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.feedserver", "--root", str(root), "--host", hosts],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield list(json.loads(server.stdout.readline())["urls"])
    finally:
        server.communicate(input="", timeout=30)  # closing its stdin stops it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="comma-separated loopback addresses")
    args = parser.parse_args(argv)
    servers = [FeedServer(args.root, host=h, record=False).start() for h in iter_hosts(args.host)]
    print(json.dumps({"urls": [s.base_url for s in servers]}), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
