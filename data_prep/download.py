"""`make download`: fetch the public raw sources into RAW_DIR (same layout as ../shared/datasets).

Default: upstream URLs (GitHub files at pinned commits, Hugging Face `resolve` URLs); CPsyCoun comes
as ONE archive of the repository at its pinned commit (GitHub's codeload tarball), of which only the
CPsyCounD dialogues and CPsyCounE cases are unpacked. With `--base-url` every file is fetched from
`<base>/<path in raw dir>` instead (a mirror, or a local `python -m http.server` serving a raw folder;
the CPsyCoun archive as `<base>/CPsyCoun/CPsyCoun-<commit>.tar.gz`). PsyQA's full data needs a signed
agreement: only the public example file is fetched and the way to obtain the rest is printed.

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
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from psyfactory.core.errors import DataError
from psyfactory.core.files import atomic_write_text

CPSYCOUN_COMMIT = "1954f2e2d01d3b0f568e1673a525a6d3d9a34c03"
CPSYCOUN_ARCHIVE = f"https://codeload.github.com/CAS-SIAT-XinHai/CPsyCoun/tar.gz/{CPSYCOUN_COMMIT}"
# archive members we keep: <top folder>/CPsyCounD/Data/case_N.txt and <top>/CPsyCounE/<topic>/<k>.json
CPSYCOUN_MEMBER = re.compile(r"^[^/]+/(CPsyCounD/Data/case_\d+\.txt|CPsyCounE/[^/.][^/]*/\d+\.json)$")
PSYQA = "https://raw.githubusercontent.com/thu-coai/PsyQA/e224c7e518c98a0c3df11e2fc5e6698044d8e156"
LONGEMOTION = "https://raw.githubusercontent.com/LongEmotion/LongEmotion/7149110920c83589e979a0f1615d2661af884594/data"
PSYDT = "https://huggingface.co/datasets/YIRONGCHEN/PsyDTCorpus/resolve/main"
EMOTION_HF = "https://huggingface.co/datasets/dair-ai/emotion/resolve/main/split"
EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")
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
MD5 = {  # known checksums of upstream files
    "emotion/train.txt": "501eca548aa1ef8d5dbd85662c709831",
    "emotion/val.txt": "0d565de2de8459abcfa3502a28cd6a5b",
    "emotion/test.txt": "b476a784c7f7dbcf4b47881f1240c1b1",
    "LongEmotion/Emotion_Summary_origin.jsonl": "a3c0758f6f15c7691f835ce84ccf7a07",  # GitHub data/ @ 7149110
}
PSYQA_AGREEMENT = (
    "PsyQA full data (~22K questions) is available only under the PsyQA user agreement "
    "(non-commercial academic research, no redistribution): sign the agreement in "
    "https://github.com/thu-coai/PsyQA and email it to thu-sunhao@foxmail.com, then place the file "
    "as <RAW_DIR>/PsyQA/PsyQA_full.json. Only the public example (PsyQA_example.json) is fetched here."
)


@dataclass(frozen=True)
class Item:
    rel: str  # path inside the raw dir (for an archive: where a mirror serves it)
    url: str  # upstream URL
    convert: Callable[[bytes], bytes] | None = None  # upstream format -> raw format
    optional: bool = False  # absence is expected
    unpack: str | None = None  # an archive: the raw-dir folder its wanted members are written to

    def present(self, raw_dir: Path) -> bool:
        if self.unpack:
            folder = raw_dir / self.unpack
            return any((folder / "CPsyCounD" / "Data").glob("case_*.txt")) and (folder / "CPsyCounE").is_dir()
        return (raw_dir / self.rel).exists()


def unpack_cpsycoun(data: bytes, target: Path) -> int:
    """Write the archive's CPsyCounD/CPsyCounE files under `target` (atomically, one by one); the
    member names are checked against CPSYCOUN_MEMBER, so nothing lands outside `target`."""
    n = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                m = CPSYCOUN_MEMBER.match(member.name)
                if not (m and member.isfile()):
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    _write_bytes(target / m.group(1), fh.read())
                    n += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"CPsyCoun archive: not a readable tar.gz ({type(e).__name__}: {e})") from None
    return n


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
        "psydt": [Item(f"PsyDTCorpus/{n}", f"{PSYDT}/{n}") for n in
                  ("PsyDTCorpus_train_mulit_turn_packing.json", "PsyDTCorpus_test_single_turn_split.json")],
        "psyqa": [Item("PsyQA/PsyQA_example.json", f"{PSYQA}/PsyQA_example.json")],
        "emotion": [Item(f"emotion/{s}.txt", f"{EMOTION_HF}/{hf}-00000-of-00001.parquet", _parquet_to_txt)
                    for s, hf in (("train", "train"), ("val", "validation"), ("test", "test"))],
        "longemotion": [Item("LongEmotion/Emotion_Summary_origin.jsonl", f"{LONGEMOTION}/Emotion_Summary_origin.jsonl")],
        "psychcounsel_bench": [Item("PsychCounsel-Bench/PsychoBench.json", PSYCHOBENCH),
                               Item("PsychCounsel-Bench/PsychCounsel-Bench.json", PSYCHOBENCH, first_items)],
    }


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "psyfactory-download"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


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


def download(raw_dir: Path, sources: list[str] | None = None, base_url: str | None = None,
             force: bool = False, workers: int = 8) -> list[str]:
    """Fetch the sources; returns the failures ("rel: reason"). Existing files are kept unless force."""
    plan = manifest()
    names = sources or list(plan)
    unknown = [s for s in names if s not in plan]
    if unknown:
        raise DataError(f"unknown source(s) {unknown}; choose from {', '.join(plan)}")
    items = [it for s in names for it in plan[s]]
    todo = [it for it in items if force or not it.present(raw_dir)]
    failures: list[str] = []
    missing_optional = 0

    def one(it: Item) -> tuple[Item, str]:
        if base_url:
            url, convert = f"{base_url.rstrip('/')}/{urllib.parse.quote(it.rel)}", None
        else:
            url, convert = it.url, it.convert
        try:
            data = _fetch(url)
        except urllib.error.HTTPError as e:
            return it, f"HTTP {e.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            return it, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if convert is not None:
            try:
                data = convert(data)
            except DataError as e:
                return it, str(e)
        want = MD5.get(it.rel) if convert is None else None  # a converted file need not be byte-identical
        if want and hashlib.md5(data).hexdigest() != want:
            return it, f"md5 mismatch (got {hashlib.md5(data).hexdigest()}, want {want})"
        want = SHA256.get(it.rel)  # these must be byte-identical however they were obtained
        if want and hashlib.sha256(data).hexdigest() != want:
            return it, f"sha256 mismatch (got {hashlib.sha256(data).hexdigest()}, want {want})"
        if it.unpack:
            try:
                n = unpack_cpsycoun(data, raw_dir / it.unpack)
            except DataError as e:
                return it, str(e)
            return it, "" if n else "the archive holds no CPsyCounD/CPsyCounE files"
        _write_bytes(raw_dir / it.rel, data)
        return it, ""

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for it, err in tqdm(pool.map(one, todo), total=len(todo), desc="download", unit="file"):
            if not err:
                continue
            if it.optional and err == "HTTP 404":
                missing_optional += 1
            else:
                failures.append(f"{it.rel}: {err}")
    done = len(todo) - len(failures) - missing_optional
    print(f"download: {done} fetched, {len(items) - len(todo)} already present, "
          + (f"{missing_optional} optional files absent upstream (404), " if missing_optional else "")
          + f"{len(failures)} failed -> {raw_dir}")
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
