"""`make download`: fetch the public raw sources into RAW_DIR (the layout of docs/data.md, "Raw layout").

Every source is a list of `Item`s: where the file goes in the raw folder, where it comes from at a
pinned revision, and the sha256 of its upstream bytes where known. Files hosted on the Hugging Face hub
(PsyDTCorpus, dair-ai Emotion) are fetched through huggingface_hub at a pinned revision, so
`HF_ENDPOINT` (a mirror such as https://hf-mirror.com) is honoured; with `USE_MODELSCOPE_HUB=1` the ones
ModelScope hosts (PsyDTCorpus) come from ModelScope instead. GitHub-hosted files (PsyQA's example,
LongEmotion) and CPsyCoun (ONE archive of the repository at its pinned commit, GitHub's codeload tarball,
of which only the CPsyCounD dialogues and CPsyCounE cases are unpacked) are plain HTTPS. All routes share
one downloader (data_prep/fetch.py: retries, resume of a dropped connection, a progress bar).

With `--base-url` every file is fetched from `<base>/<path in raw dir>` instead (a mirror laid out like the
raw folder, or `python -m http.server` over one; the CPsyCoun archive as
`<base>/CPsyCoun/CPsyCoun-<commit>.tar.gz`). Each fetched file is checked against its pinned sha256 (md5
for the legacy `MD5` entries) and recorded, with its origin, resolved hub commit and sha256, in
`RAW_DIR/download_manifest.json`. PsyQA's full data needs a signed agreement: only the public example
file is fetched and the way to obtain the rest is printed.

PsychCounsel-Bench (source `psychcounsel_bench`): the official partial release, `PsychoBench.json` of
github.com/cloversjtu/PsychoBench at a pinned commit (1,000 items; CC BY-NC-ND 4.0: share unchanged, with
attribution, non-commercially), kept as it is; its first 500 items, serialized as seed 004's author's
copy (`lora/benchmark/PsychCounsel-Bench.json` of yanze-jiang/Qwen3-4B-Fine-tuning-for-Psychological-
Counseling-with-RAG@d005dcc), are the seed's benchmark file `PsychCounsel-Bench.json`: both are checked
against their SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from psyfactory.core import settings
from psyfactory.core.errors import DataError
from psyfactory.core.files import atomic_write_json, atomic_write_text, exclusive
from psyfactory.data_prep import fetch

CPSYCOUN_COMMIT = "1954f2e2d01d3b0f568e1673a525a6d3d9a34c03"
CPSYCOUN_ARCHIVE = f"https://codeload.github.com/CAS-SIAT-XinHai/CPsyCoun/tar.gz/{CPSYCOUN_COMMIT}"
# archive members we keep: <top folder>/CPsyCounD/Data/case_N.txt and <top>/CPsyCounE/<topic>/<k>.json
CPSYCOUN_MEMBER = re.compile(r"^[^/]+/(CPsyCounD/Data/case_\d+\.txt|CPsyCounE/[^/.][^/]*/\d+\.json)$")
PSYQA = "https://raw.githubusercontent.com/thu-coai/PsyQA/e224c7e518c98a0c3df11e2fc5e6698044d8e156"
LONGEMOTION = "https://raw.githubusercontent.com/LongEmotion/LongEmotion/7149110920c83589e979a0f1615d2661af884594/data"
PSYDT_REPO = "YIRONGCHEN/PsyDTCorpus"  # on the HF hub and on ModelScope under the same name
# The HF commit of PsyDTCorpus could not be looked up from here: the revision is the branch, and the
# sha256 of both files (from the Git LFS pointers of a public copy) pins their content instead.
PSYDT_REVISION = "main"
EMOTION_REPO = "dair-ai/emotion"
EMOTION_REVISION = "cab853a1dbdf4c42c2b3ef2173804746df8825fe"  # the "split" config as parquet
EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")
SOS1K_COMMIT = "1322c3b09bb9cc283eb840fe3b27a03d775894f4"  # HongzhiQ/FineGrainedSuicideDetection (SOS-1K)
SOS1K = f"https://raw.githubusercontent.com/HongzhiQ/FineGrainedSuicideDetection/{SOS1K_COMMIT}/suicideDataProcessing/data"
PSYCHOBENCH_COMMIT = "8abff43b5a344d071a5e5f4c3b2c3915cb671aaf"  # cloversjtu/PsychoBench, 2025-10-07
PSYCHOBENCH = f"https://raw.githubusercontent.com/cloversjtu/PsychoBench/{PSYCHOBENCH_COMMIT}/PsychoBench.json"
SEED004_BENCH_ITEMS = 500  # seed 004's benchmark: the first 500 items (ids 1..500)
PSYCHOBENCH_LICENSE = ("PsychCounsel-Bench (PsychoBench, Zeng et al. 2025, arXiv 2510.01611) is licensed CC BY-NC-ND 4.0: "
                       "non-commercial use, attribution, no derivatives; do not redistribute changed copies.")
SHA256 = {  # known checksums of the files as written to the raw dir
    "PsychCounsel-Bench/PsychoBench.json": "eb54c279359e084f4fca09dab494da671aa54e22ba08996ddfa9e050b3c7063a",
    # = seed 004's author's file (lora/benchmark/PsychCounsel-Bench.json @ d005dcc), byte for byte
    "PsychCounsel-Bench/PsychCounsel-Bench.json": "dc7b72ec75ef5227c1833e18f0ed152f7dff4ef0bd8643ee5449f23975f6be59",
}
MD5 = {  # known checksums of upstream files in their raw-folder form (also checked when fetched from --base-url)
    "emotion/train.txt": "501eca548aa1ef8d5dbd85662c709831",
    "emotion/val.txt": "0d565de2de8459abcfa3502a28cd6a5b",
    "emotion/test.txt": "b476a784c7f7dbcf4b47881f1240c1b1",
    "LongEmotion/Emotion_Summary_origin.jsonl": "a3c0758f6f15c7691f835ce84ccf7a07",  # GitHub data/ @ 7149110
    # SOS-1K's five cross-validation folds @ 1322c3b (its test split is not fetched)
    "SOS-1K/fold1.tsv": "8eab768476cbe3cb56aaa818d45261d2",
    "SOS-1K/fold2.tsv": "ef7f595bdc151a8ab532e7eb907a6344",
    "SOS-1K/fold3.tsv": "d3006c0b9e942245ccc77612d2963f5b",
    "SOS-1K/fold4.tsv": "b443cefc3891f8b1fc581720a3c2708a",
    "SOS-1K/fold5.tsv": "d648ea881c33c1ae76c204bce478033e",
    "SOS-1K/fold1_twoClass.tsv": "d61091c82629185e8ed3b84c91676069",
    "SOS-1K/fold2_twoClass.tsv": "23fec0a7454dc78700f8457a724776ab",
    "SOS-1K/fold3_twoClass.tsv": "681f18d81c81fa076abc0c593b31a274",
    "SOS-1K/fold4_twoClass.tsv": "4b956080964a96a2bebb991c0d17ddee",
    "SOS-1K/fold5_twoClass.tsv": "25a431efe3898008964f6d01d6264cd3",
}
PSYQA_AGREEMENT = (
    "PsyQA full data (~22K questions) is available only under the PsyQA user agreement "
    "(non-commercial academic research, no redistribution): sign the agreement in "
    "https://github.com/thu-coai/PsyQA and email it to thu-sunhao@foxmail.com, then place the file "
    "as <RAW_DIR>/PsyQA/PsyQA_full.json. Only the public example (PsyQA_example.json) is fetched here."
)
MANIFEST = "download_manifest.json"  # in RAW_DIR: every fetched file, its origin and sha256
STAGING = ".download"  # in RAW_DIR: files being fetched (`.part` files resume on the next run)


@dataclass(frozen=True)
class Source:
    """What a model card says about a source: its name, home, licence, and the raw folder of its files."""

    title: str
    homepage: str
    licence: str
    folder: str


SOURCES = {
    "psydt": Source("PsyDTCorpus (SoulChat2.0 / PsyDT, SCUT)", "https://modelscope.cn/datasets/YIRONGCHEN/PsyDTCorpus",
                    "Apache-2.0 (dataset card); the authors' disclaimer: research use only", "PsyDTCorpus"),
    "cpsycoun": Source("CPsyCoun (CPsyCounD dialogues, CPsyCounE cases)", "https://github.com/CAS-SIAT-XinHai/CPsyCoun",
                       "CC BY 4.0 (GitHub LICENSE; the HF dataset card says CC BY-SA 4.0)", "CPsyCoun"),
    "psyqa": Source("PsyQA (THU-CoAI, Yixinli)", "https://github.com/thu-coai/PsyQA",
                    "PsyQA user agreement: non-commercial academic research only, no redistribution; products must "
                    "carry its notices (心理互助问答，非心理咨询，仅为心理知识分享)", "PsyQA"),
    "emotion": Source("Emotion (dair-ai, CARER)", "https://huggingface.co/datasets/dair-ai/emotion",
                      "educational and research use only (dair-ai; HF card: other)", "emotion"),
    "longemotion": Source("LongEmotion Emotion Summary", "https://github.com/LongEmotion/LongEmotion",
                          "MIT (HF dataset card; the GitHub repository has no LICENSE file)", "LongEmotion"),
    "psychcounsel": Source("PsychCounsel-Bench", "https://github.com/cloversjtu/PsychCounsel-Bench",
                           "CC BY-NC-ND 4.0", "PsychCounsel-Bench"),
}


@dataclass(frozen=True)
class Hub:
    """A file of a Hugging Face hub repository at a pinned revision (a commit sha; a branch only where the
    Item's sha256 pins the content), and the ModelScope dataset that holds the same file, if any."""

    repo: str
    path: str  # inside the repository
    revision: str
    repo_type: str = "dataset"
    modelscope: str | None = None  # ModelScope dataset id (USE_MODELSCOPE_HUB=1)
    modelscope_revision: str = "master"


@dataclass(frozen=True)
class Item:
    rel: str  # path inside the raw dir (for an archive: where a mirror serves it)
    url: str | None = None  # upstream URL at a pinned commit (plain HTTPS); or `hub`
    convert: Callable[[bytes], bytes] | None = None  # upstream format -> raw format
    optional: bool = False  # absence is expected
    unpack: str | None = None  # an archive: the raw-dir folder its wanted members are written to
    sha256: str | None = None  # of the upstream bytes: checked when fetched, recorded always
    hub: Hub | None = None  # a hub-hosted file (fetched with huggingface_hub / ModelScope)

    def present(self, raw_dir: Path) -> bool:
        if self.unpack:
            folder = raw_dir / self.unpack
            return any((folder / "CPsyCounD" / "Data").glob("case_*.txt")) and (folder / "CPsyCounE").is_dir()
        return (raw_dir / self.rel).exists()


def unpack_cpsycoun(data: bytes | Path, target: Path) -> tuple[int, str]:
    """Write the archive's CPsyCounD/CPsyCounE files under `target` (atomically, one by one); the member
    names are checked against CPSYCOUN_MEMBER, so nothing lands outside `target`. Returns the number of
    files and a sha256 over the sorted `name sha256` lines of what was written."""
    n, lines = 0, []
    try:
        opened = {"name": str(data)} if isinstance(data, Path) else {"fileobj": io.BytesIO(data)}
        with tarfile.open(mode="r:*", **opened) as tar:
            for member in tar:
                m = CPSYCOUN_MEMBER.match(member.name)
                if not (m and member.isfile()):
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    content = fh.read()
                    _write_bytes(target / m.group(1), content)
                    lines.append(f"{m.group(1)} {hashlib.sha256(content).hexdigest()}\n")
                    n += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"CPsyCoun archive: not a readable tar.gz ({type(e).__name__}: {e})") from None
    return n, hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def _parquet_to_txt(data: bytes) -> bytes:
    """HF dair-ai/emotion parquet (text, label id) -> the original `text;label` lines."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data)).to_pydict()
    return "".join(f"{t};{EMOTION_LABELS[lab]}\n" for t, lab in zip(table["text"], table["label"], strict=True)).encode()


def first_items(data: bytes, n: int = SEED004_BENCH_ITEMS) -> bytes:
    """The first `n` items of a PsychoBench JSON array, written as seed 004's author's copy is (two-space
    indent, UTF-8 text, a final newline)."""
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"PsychoBench.json: not a UTF-8 JSON array ({type(e).__name__}: {e})") from None
    if not isinstance(items, list) or len(items) < n:
        raise DataError(f"PsychoBench.json: expected a JSON array of at least {n} items")
    return (json.dumps(items[:n], ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def manifest() -> dict[str, list[Item]]:
    return {
        "cpsycoun": [Item(f"CPsyCoun/CPsyCoun-{CPSYCOUN_COMMIT}.tar.gz", CPSYCOUN_ARCHIVE, unpack="CPsyCoun")],
        "psydt": [Item(f"PsyDTCorpus/{n}", sha256=sha, hub=Hub(PSYDT_REPO, n, PSYDT_REVISION, modelscope=PSYDT_REPO))
                  for n, sha in (("PsyDTCorpus_train_mulit_turn_packing.json",
                                  "517fabb22502b84de72ff1d62c7efea0bd16f41cf0939d2cd1d52d285c396345"),
                                 ("PsyDTCorpus_test_single_turn_split.json",
                                  "5b4eeb46721acbf5e9807fcf46902487855cbcd1ed45770b92f27ab1be95207d"))],
        "psyqa": [Item("PsyQA/PsyQA_example.json", f"{PSYQA}/PsyQA_example.json",
                       sha256="af0e8322727f4ea1a6dd5aac9c116ea56c488a704e3065e1382138e89d8a6946")],
        "emotion": [Item(f"emotion/{s}.txt", convert=_parquet_to_txt,
                         hub=Hub(EMOTION_REPO, f"split/{hf}-00000-of-00001.parquet", EMOTION_REVISION))
                    for s, hf in (("train", "train"), ("val", "validation"), ("test", "test"))],
        "longemotion": [Item("LongEmotion/Emotion_Summary_origin.jsonl", f"{LONGEMOTION}/Emotion_Summary_origin.jsonl")],
        "sos1k": [Item(f"SOS-1K/fold{k}{suffix}.tsv", f"{SOS1K}/{folder}/fold{k}{suffix}.tsv")
                  for k in range(1, 6) for folder, suffix in (("fine-grained", ""), ("binary", "_twoClass"))],
        "psychcounsel_bench": [Item("PsychCounsel-Bench/PsychoBench.json", PSYCHOBENCH,
                                    sha256=SHA256["PsychCounsel-Bench/PsychoBench.json"]),
                               Item("PsychCounsel-Bench/PsychCounsel-Bench.json", PSYCHOBENCH, first_items,
                                    sha256=SHA256["PsychCounsel-Bench/PsychoBench.json"])],
    }


def _write_bytes(path: Path, data: bytes) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 (a published checksum, not security)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Route:
    """How this run fetches: a --base-url mirror, the HF endpoint (HF_ENDPOINT) and whether ModelScope is used."""

    base_url: str | None
    endpoint: str
    modelscope: bool
    retries: int
    timeout: float

    @classmethod
    def current(cls, base_url: str | None) -> Route:
        endpoint = settings.get("HF_ENDPOINT")
        if endpoint is None:
            from huggingface_hub import constants

            endpoint = constants.ENDPOINT
        return cls(base_url.rstrip("/") if base_url else None, endpoint.rstrip("/"),
                   settings.flag("USE_MODELSCOPE_HUB", False), int(settings.number("PSY_DOWNLOAD_RETRIES", 5, int)),
                   settings.number("PSY_DOWNLOAD_TIMEOUT", 60.0))

    def fetch(self, it: Item, staged: Path) -> tuple[fetch.Fetched, bool]:
        """(the fetched file, whether it is in upstream form and needs `convert`)."""
        if self.base_url:
            url = f"{self.base_url}/{urllib.parse.quote(it.rel)}"
            return fetch.http_file(url, staged, retries=self.retries, timeout=self.timeout, desc=it.rel), False
        if it.hub is not None:
            h = it.hub
            if self.modelscope and h.modelscope:
                return fetch.modelscope_file(h.modelscope, h.path, staged, revision=h.modelscope_revision,
                                             retries=self.retries), True
            return fetch.hub_file(h.repo, h.path, staged, revision=h.revision, repo_type=h.repo_type,
                                  endpoint=self.endpoint, retries=self.retries, timeout=self.timeout), True
        if it.url is None:
            raise fetch.FetchError("the item names neither a url nor a hub file", permanent=True)
        return fetch.http_file(it.url, staged, retries=self.retries, timeout=self.timeout, desc=it.rel), True


def _one(it: Item, source: str, raw_dir: Path, route: Route) -> tuple[Item, str, dict[str, Any] | None]:
    """Fetch, check, convert or unpack, and place one item; (item, failure reason or "", manifest record)."""
    staged = raw_dir / STAGING / it.rel
    try:
        got, upstream = route.fetch(it, staged)
    except fetch.FetchError as e:
        return it, str(e), None
    try:
        checked = []
        if it.sha256 and (upstream or it.convert is None):  # a mirror serves converted files in raw form
            if got.sha256 != it.sha256:
                return it, f"sha256 mismatch (got {got.sha256}, want {it.sha256})", None
            checked.append("sha256")
        convert = it.convert if upstream else None
        want_raw = SHA256.get(it.rel)  # the file as written to the raw dir, however it was obtained
        if want_raw and convert is None:
            if got.sha256 != want_raw:
                return it, f"sha256 mismatch (got {got.sha256}, want {want_raw})", None
            checked.append("sha256 (raw)")
        want_md5 = MD5.get(it.rel) if convert is None else None  # a converted file need not be byte-identical
        if want_md5:
            got_md5 = _md5(got.path)
            if got_md5 != want_md5:
                return it, f"md5 mismatch (got {got_md5}, want {want_md5})", None
            checked.append("md5")
        record: dict[str, Any] = {
            "source": source, "from": got.origin, "fetched_sha256": got.sha256, "fetched_bytes": got.bytes,
            "pinned": checked, "attempts": got.attempts, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if got.resumed_at:
            record["resumed_at"] = got.resumed_at
        if it.unpack:
            n, digest = unpack_cpsycoun(got.path, raw_dir / it.unpack)
            if not n:
                return it, "the archive holds no CPsyCounD/CPsyCounE files", None
            record.update(unpacked_to=it.unpack, files=n, files_sha256=digest)
        elif convert is not None:
            data = convert(got.path.read_bytes())
            want_raw = SHA256.get(it.rel)
            if want_raw and hashlib.sha256(data).hexdigest() != want_raw:
                return it, f"sha256 mismatch (got {hashlib.sha256(data).hexdigest()}, want {want_raw})", None
            _write_bytes(raw_dir / it.rel, data)
            record.update(converted=True, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        else:
            target = raw_dir / it.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(got.path), target)
            record.update(sha256=got.sha256, bytes=got.bytes)
        return it, "", record
    except DataError as e:
        return it, str(e), None
    finally:
        staged.unlink(missing_ok=True)


def _record(raw_dir: Path, records: dict[str, dict[str, Any]], route: Route) -> None:
    import json

    path = raw_dir / MANIFEST
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}
    files = old.get("files") if isinstance(old.get("files"), dict) else {}
    files.update(records)
    atomic_write_json(path, {
        "about": "files fetched by `make download`: origin (URL, or hub repository, revision and resolved commit), "
                 "sha256 of the fetched bytes and of the file in this folder, and which pinned checksums were checked",
        "last_run": {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "base_url": route.base_url,
                     "hf_endpoint": route.endpoint, "modelscope": route.modelscope},
        "files": dict(sorted(files.items())),
    })


def download(raw_dir: Path, sources: list[str] | None = None, base_url: str | None = None,
             force: bool = False, workers: int = 8) -> list[str]:
    """Fetch the sources; returns the failures ("rel: reason"). Existing files are kept unless force."""
    plan = manifest()
    names = sources or list(plan)
    unknown = [s for s in names if s not in plan]
    if unknown:
        raise DataError(f"unknown source(s) {unknown}; choose from {', '.join(plan)}")
    route = Route.current(base_url)
    items = [(s, it) for s in names for it in plan[s]]
    todo = [(s, it) for s, it in items if force or not it.present(raw_dir)]
    failures: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    missing_optional = 0
    raw_dir.mkdir(parents=True, exist_ok=True)
    where = route.base_url or ("ModelScope where it hosts the data, else " if route.modelscope else "") + \
        f"{route.endpoint} for hub files, GitHub for the rest"
    if todo:
        print(f"download: {len(todo)} file(s) from {where}", flush=True)
    with exclusive(raw_dir / ".download.lock", f"raw folder {raw_dir}"):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda pair: _one(pair[1], pair[0], raw_dir, route), todo)
            for it, err, record in tqdm(results, total=len(todo), desc="download", unit="file"):
                if record is not None:
                    records[it.rel] = record
                if not err:
                    continue
                if it.optional and err == "HTTP 404":
                    missing_optional += 1
                else:
                    failures.append(f"{it.rel}: {err}")
        if records:
            _record(raw_dir, records, route)
        staging = raw_dir / STAGING
        if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
            shutil.rmtree(staging, ignore_errors=True)  # nothing left to resume
    done = len(todo) - len(failures) - missing_optional
    print(f"download: {done} fetched, {len(items) - len(todo)} already present, "
          + (f"{missing_optional} optional files absent upstream (404), " if missing_optional else "")
          + f"{len(failures)} failed -> {raw_dir}" + (f" (sha256 of each in {raw_dir / MANIFEST})" if records else ""))
    for f in failures[:20]:
        print(f"  FAILED {f}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    if "psyqa" in names:
        print(PSYQA_AGREEMENT)
    if "psychcounsel_bench" in names:
        print(PSYCHOBENCH_LICENSE)
    if failures or missing_optional:  # keep a record next to the data
        atomic_write_text(raw_dir / "download_failures.txt", "".join(f + "\n" for f in failures))
    return failures
