"""A loopback stand-in for the Hugging Face hub's file-resolve API (what HF_ENDPOINT points a mirror at)
and for plain file hosts (GitHub raw, codeload), with the faults a real network has.

huggingface_hub's `hf_hub_download` asks `HEAD <endpoint>/<repo_type>s/<repo>/resolve/<revision>/<path>`
(models without the `models/` prefix) and needs `X-Repo-Commit`, an `ETag` and `Content-Length` in the
answer; then it GETs the same URL and, after a dropped connection, GETs again with `Range: bytes=N-`.
This server answers exactly that, honours ranges (206 + Content-Range), and can drop the connection
halfway through a file the first time it is sent (`drop_once`), or answer 503 a number of times.
Every request is recorded as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class FakeHub:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path (unquoted) -> content
    commits: dict[str, str] = field(default_factory=dict)  # URL path -> X-Repo-Commit
    drop_once: set[str] = field(default_factory=set)  # URL paths whose first full GET is cut in half
    fail: dict[str, int] = field(default_factory=dict)  # URL path -> answer 503 this many times first
    ignore_range: set[str] = field(default_factory=set)  # URL paths served whole (200) even when a range is asked
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add_hub_file(self, repo: str, revision: str, path: str, data: bytes, *, repo_type: str = "dataset",
                     commit: str | None = None) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        key = f"/{prefix}{repo}/resolve/{revision}/{path}"
        self.files[key] = data
        self.commits[key] = commit or (revision if re.fullmatch(r"[0-9a-f]{40}", revision) else "c" * 40)
        return key

    def add_file(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return path

    def gets(self, key: str) -> list[str | None]:
        """The Range headers of the GETs of one file, in order (None: no range)."""
        return [r for m, p, r in self.requests if m == "GET" and p == key]


def serve(hub: FakeHub) -> tuple[http.server.ThreadingHTTPServer, FakeHub]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, head: bool) -> None:
            key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            rng = self.headers.get("Range")
            hub.requests.append(("HEAD" if head else "GET", key, rng))
            data = hub.files.get(key)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if hub.fail.get(key, 0) > 0 and not head:
                hub.fail[key] -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and not head and key not in hub.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", hub.commits.get(key, "c" * 40))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if head:
                return
            if key in hub.drop_once and start == 0:
                hub.drop_once.discard(key)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(True)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    return httpd, hub
