"""The review page's server: one static HTML file (psyfactory/assets/review.html: its CSS and script inline, no
CDN, works offline) and a small JSON API, on Python's own HTTP server, bound to 127.0.0.1 by default.

    GET  /                         the page
    GET  /api/meta                 run, task, variants, number of items, default reviewer, blind
    GET  /api/index                per item: id, crisis flag
    GET  /api/item?n=<index>       one item: prompt, reference, both answers, plugin scores, crisis flags
    GET  /api/judgements?reviewer= that reviewer's saved judgements, by item id
    POST /api/judgement            save one judgement (JSON body), answers the saved record and the summary

Writes need the page's token (header X-Review-Token, in the page the server sent), and every request a Host
of this machine when it listens on loopback: another web site open in the same browser cannot post
judgements, nor read the items through DNS rebinding.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from psyfactory.core.errors import BusyError, EvalError, UserError
from psyfactory.core.files import exclusive
from psyfactory.review import ReviewSet, Store

PAGE = Path(__file__).parent / "assets" / "review.html"
MAX_BODY = 64 * 1024
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer:
    """Serve one review set; `start()` in a thread (tests) or `serve_forever()` (the command)."""

    def __init__(self, rs: ReviewSet, out_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 reviewer: str = "", blind: bool = False) -> None:
        self.rs, self.out_dir, self.host, self.reviewer, self.blind = rs, out_dir, host, reviewer, blind
        self.token = secrets.token_urlsafe(24)
        self.store = Store(out_dir, rs, blind=blind)
        self.store.check_pair()
        self._lock_cm: Any = None
        self._thread: threading.Thread | None = None
        self.page = PAGE.read_text(encoding="utf-8").replace("__REVIEW_TOKEN__", self.token)
        self.httpd = self._bind(port)

    def _bind(self, port: int) -> ThreadingHTTPServer:
        handler = type("Handler", (_Handler,), {"server_ref": self})
        server_cls = type("Server", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6}) \
            if ":" in self.host else ThreadingHTTPServer  # HOST=::1
        try:
            httpd = server_cls((self.host, port), handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {self.host} is in use (another `make review`, TensorBoard, ...): "
                                "pass PORT=<another port>, or PORT=0 for any free one") from None
            if e.errno == errno.EACCES:
                raise UserError(f"port {port} on {self.host}: permission denied (ports below 1024 need root): "
                                "pass PORT=<1024-65535>") from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
                raise UserError(f"HOST={self.host}: not an address of this machine ({e.strerror})") from None
            raise
        httpd.daemon_threads = True
        return httpd

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """One server per review folder: a second one is refused (BusyError) instead of losing saves."""
        with exclusive(self.out_dir.parent / f".{self.out_dir.name}.lock", f"review {self.out_dir}"):
            yield

    def serve_forever(self) -> None:
        with self.holding():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.httpd.serve_forever(poll_interval=0.2)
            finally:
                self.httpd.server_close()

    def start(self) -> ReviewServer:
        self._lock_cm = self.holding()
        try:
            self._lock_cm.__enter__()
        except BusyError:
            self.httpd.server_close()
            raise
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None

    # the API's answers
    def meta(self) -> dict[str, Any]:
        rs = self.rs
        return {"run": rs.tuned.run, "task": rs.task, "tuned": rs.tuned.label, "base": rs.base.label,
                "n": len(rs.items), "reviewer": self.reviewer, "blind": self.blind, "out": str(self.out_dir),
                "model": rs.tuned.metrics.get("model")}

    def index(self) -> list[dict[str, Any]]:
        return [{"n": it["n"], "id": it["id"], "crisis": any(f["status"] == "crisis" for f in it["crisis"]),
                 "left": self.left(it["id"])} for it in self.rs.items]

    def left(self, item_id: str) -> str:
        """Which answer is shown on the left: the base one, or in blind mode a fixed coin per item."""
        if not self.blind:
            return "base"
        import hashlib

        return "base" if hashlib.sha256(f"psyfactory-review:{item_id}".encode()).digest()[0] % 2 else "tuned"

    def item(self, n: int) -> dict[str, Any]:
        it = self.rs.items[n]
        out = {**it, "left": self.left(it["id"])}
        if self.blind:  # which answer is which stays hidden: no scores or net records beside the answers
            out["base"] = {**it["base"], "scores": {}, "net": None}
            out["tuned"] = {**it["tuned"], "scores": {}, "net": None}
        return out


class _Handler(BaseHTTPRequestHandler):
    server_ref: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # quiet: the terminal shows the URL and the saves

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        srv = self.server_ref
        if not is_loopback(srv.host):
            return True  # served on purpose to a network (HOST=): no name to check against
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return is_loopback(name.strip("[]")) or name in LOOPBACK_NAMES

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            return self._json({"error": "unknown Host"}, HTTPStatus.FORBIDDEN)
        srv = self.server_ref
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                return self._send(200, srv.page.encode("utf-8"), "text/html; charset=utf-8")
            if url.path == "/api/meta":
                return self._json(srv.meta())
            if url.path == "/api/index":
                return self._json(srv.index())
            if url.path == "/api/item":
                n = int((q.get("n") or ["-1"])[0])
                if not 0 <= n < len(srv.rs.items):
                    return self._json({"error": f"no item {n}"}, HTTPStatus.NOT_FOUND)
                return self._json(srv.item(n))
            if url.path == "/api/judgements":
                from psyfactory.review import check_reviewer

                return self._json(srv.store.of(check_reviewer((q.get("reviewer") or [""])[0])))
            if url.path == "/api/summary":
                return self._json(srv.store.summary())
        except (ValueError, UserError) as e:
            return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        return self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server_ref
        if not self._host_ok():
            return self._json({"error": "unknown Host"}, HTTPStatus.FORBIDDEN)
        if not secrets.compare_digest(self.headers.get("X-Review-Token") or "", srv.token):
            return self._json({"error": "missing or wrong page token: reload the page"}, HTTPStatus.FORBIDDEN)
        if urlsplit(self.path).path != "/api/judgement":
            return self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        try:
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= MAX_BODY:
                raise EvalError(f"a judgement is 1 to {MAX_BODY} bytes of JSON")
            body = json.loads(self.rfile.read(size).decode("utf-8"))
            rec = srv.store.save(body)
        except (ValueError, UserError) as e:  # JSONDecodeError is a ValueError
            return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except OSError as e:  # disk full, read-only: the page says it was not saved
            return self._json({"error": f"not saved: {e.strerror} ({e.filename})"}, HTTPStatus.INTERNAL_SERVER_ERROR)
        print(f"[psyfactory] saved: {rec['reviewer']} · item {rec['id']} · {rec['preference'] or '-'}"
              + "".join(f" · {s} unsafe" for s in ("base", "tuned") if rec["safety"][s]), flush=True)
        return self._json({"saved": rec, "summary": srv.store.last_summary})

