"""One downloader for the public sources (`make download`): a file is fetched into a staging folder with
retries, resume and a progress bar, and handed back with its sha256; the caller checks and places it.

Three routes, one result (`Fetched`):
- `http_file`: plain HTTP(S) (GitHub files and archives at a pinned commit, a `--base-url` mirror). A
  dropped connection, a timeout or a 5xx/408/429 answer is retried up to `PSY_DOWNLOAD_RETRIES` times in a
  row without progress; each retry resumes with `Range: bytes=<have>-` from the `.part` file, which also
  survives an interrupted `make download` (the next run continues it). A server that ignores the range
  (200) sends the whole file again and the part is restarted.
- `hub_file`: a file of a Hugging Face hub repository at a pinned revision, through huggingface_hub's
  `hf_hub_download` (its metadata HEAD, ETag and X-Repo-Commit checks, its own mid-file resume), with
  `endpoint` = `HF_ENDPOINT` when set (a mirror such as https://hf-mirror.com).
- `modelscope_file`: the same file of a dataset ModelScope hosts (`USE_MODELSCOPE_HUB=1`), through the
  optional `modelscope` package (imported only then).
Failures are `FetchError`s with a one-line reason; `permanent` ones (404, 401, 403, a missing package)
are not retried.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

CHUNK = 1 << 16
PERMANENT_HTTP = (400, 401, 403, 404, 410)
MODELSCOPE_INSTALL = "pip install modelscope"
sleep: Callable[[float], None] = time.sleep  # tests replace it: retries back off 0.5, 1, 2, ... 8 seconds


class FetchError(Exception):
    """One file could not be fetched; `str(e)` is the reason in one line."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass
class Fetched:
    path: Path  # the downloaded file, in the staging folder
    sha256: str
    bytes: int
    origin: dict[str, Any]  # where it came from (url, or hub, repo, revision, resolved commit, endpoint)
    attempts: int = 1
    resumed_at: list[int] = field(default_factory=list)  # byte offsets the HTTP route resumed from


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _backoff(attempt: int) -> float:
    return min(0.5 * 2 ** (attempt - 1), 8.0)


def _range_start(content_range: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range or "")
    return int(m.group(1)) if m else None


def http_file(url: str, dest: Path, *, retries: int = 5, timeout: float = 60.0, desc: str | None = None,
              headers: dict[str, str] | None = None) -> Fetched:
    """GET `url` into `dest` (through `dest.part`), retrying and resuming; see the module doc."""
    part = dest.with_name(dest.name + ".part")
    origin = dest.with_name(dest.name + ".part.url")  # the URL the part came from: never resume another file
    part.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and (not origin.is_file() or origin.read_text(encoding="utf-8") != url):
        part.unlink()
    origin.write_text(url, encoding="utf-8")
    attempts, failures_in_a_row, resumed = 0, 0, []
    last = ""
    while True:
        attempts += 1
        have = part.stat().st_size if part.exists() else 0
        req_headers = {"User-Agent": "psyfactory-download", "Accept-Encoding": "identity", **(headers or {})}
        if have:
            req_headers["Range"] = f"bytes={have}-"
        progressed = False
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=req_headers), timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                if resp.status == 206:
                    if not have or _range_start(resp.headers.get("Content-Range")) != have:
                        part.unlink(missing_ok=True)  # a range we did not ask for: start again
                        raise http.client.HTTPException(f"range answered from another offset "
                                                        f"({resp.headers.get('Content-Range')}, asked {have})")
                    resumed.append(have)
                    mode, start = "ab", have
                else:  # a whole answer (a server that ignores ranges too): start the part again
                    mode, start = "wb", 0
                total = start + int(length) if length and length.isdigit() else None
                got = 0
                with open(part, mode) as fh, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc=desc or dest.name, leave=False,
                                                  disable=None, mininterval=0.5) as bar:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
                        got += len(chunk)
                        progressed = True
                if total is not None and start + got < total:  # http.client returns short reads silently
                    raise http.client.IncompleteRead(b"", total - start - got)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the part is longer than the file: start over
                part.unlink(missing_ok=True)
                last = "HTTP 416 (range not satisfiable)"
            elif e.code in PERMANENT_HTTP:
                part.unlink(missing_ok=True)
                origin.unlink(missing_ok=True)
                raise FetchError(f"HTTP {e.code}", permanent=True) from None
            else:
                last = f"HTTP {e.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            last = f"{type(e).__name__}: {' '.join(str(reason).split())[:200]}"
        else:
            os.replace(part, dest)
            origin.unlink(missing_ok=True)
            return Fetched(dest, sha256_of(dest), dest.stat().st_size, {"url": url}, attempts, resumed)
        failures_in_a_row = 1 if progressed else failures_in_a_row + 1
        if failures_in_a_row > retries:
            raise FetchError(f"{last} (gave up after {attempts} attempt(s); rerun to resume from "
                             f"{part.stat().st_size if part.exists() else 0} bytes)")
        sleep(_backoff(failures_in_a_row))


def _hf_reason(e: BaseException) -> tuple[str, bool]:
    """(one-line reason, permanent?) of a huggingface_hub failure, looking through its causes (a failed
    metadata HEAD comes back as LocalEntryNotFoundError caused by the HTTP or connection error)."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain: list[BaseException] = []
    seen: BaseException | None = e
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for x in chain:
        if isinstance(x, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE=1 is set (offline mode, meant for compute nodes): unset it to download", True
        if isinstance(x, RevisionNotFoundError):
            return "revision not found (HTTP 404)", True
        if isinstance(x, RepositoryNotFoundError):
            return "repository not found or gated (gated data needs HF_TOKEN)", True
        if isinstance(x, HfHubHTTPError) and x.response is not None:
            code = x.response.status_code
            return f"HTTP {code}", code in PERMANENT_HTTP
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", False


def _retrying(what: Callable[[], Fetched], retries: int, reason: Callable[[BaseException], tuple[str, bool]]) -> Fetched:
    attempt = 0
    while True:
        attempt += 1
        try:
            out = what()
            out.attempts = attempt
            return out
        except FetchError:
            raise
        except Exception as e:  # noqa: BLE001 (every failure of the library becomes one line)
            text, permanent = reason(e)
            if permanent or attempt > retries:
                raise FetchError(text if permanent else f"{text} (gave up after {attempt} attempt(s))",
                                 permanent=permanent) from None
            sleep(_backoff(attempt))


def _commit_of(path: str) -> str | None:
    """The commit of a file under a huggingface_hub cache: .../snapshots/<commit>/<path in repo>."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def hub_file(repo: str, path: str, dest: Path, *, revision: str, repo_type: str = "dataset",
             endpoint: str | None = None, retries: int = 5, timeout: float = 60.0) -> Fetched:
    """`path` of hub repository `repo` at `revision` into `dest` (huggingface_hub; `endpoint`: a mirror)."""
    from huggingface_hub import constants, hf_hub_download

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    cache = dest.parent / f".{dest.name}.hub"

    def once() -> Fetched:
        got = hf_hub_download(repo, path, repo_type=repo_type, revision=revision, endpoint=endpoint,
                              cache_dir=str(cache), etag_timeout=timeout)
        commit = _commit_of(got)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(got).resolve(), dest)  # the blob (the snapshot entry is a link to it)
        shutil.rmtree(cache, ignore_errors=True)
        origin = {"hub": "huggingface", "endpoint": endpoint, "repo": repo, "repo_type": repo_type, "path": path,
                  "revision": revision, "commit": commit}
        return Fetched(dest, sha256_of(dest), dest.stat().st_size, origin)

    try:
        return _retrying(once, retries, _hf_reason)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _modelscope_reason(e: BaseException) -> tuple[str, bool]:
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}", bool(re.search(r"\b(404|not ?exist|not found)\b", text, re.IGNORECASE))


def modelscope_file(dataset: str, path: str, dest: Path, *, revision: str = "master", retries: int = 5) -> Fetched:
    """`path` of ModelScope dataset `dataset` at `revision` into `dest` (needs the `modelscope` package)."""
    try:
        from modelscope.hub.file_download import dataset_file_download
    except ImportError:
        raise FetchError(f"USE_MODELSCOPE_HUB=1 needs the modelscope package: {MODELSCOPE_INSTALL}",
                         permanent=True) from None
    cache = dest.parent / f".{dest.name}.modelscope"

    def once() -> Fetched:
        got = Path(dataset_file_download(dataset, path, revision=revision, cache_dir=str(cache)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(got.resolve()), dest)
        origin = {"hub": "modelscope", "repo": dataset, "repo_type": "dataset", "path": path, "revision": revision}
        return Fetched(dest, sha256_of(dest), dest.stat().st_size, origin)

    try:
        return _retrying(once, retries, _modelscope_reason)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
