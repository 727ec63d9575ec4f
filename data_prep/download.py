"""`make download`: fetch the public raw sources into RAW_DIR (same layout as ../shared/datasets).

Default: upstream URLs (GitHub files at pinned commits, Hugging Face `resolve` URLs); CPsyCoun comes
as ONE archive of the repository at its pinned commit (GitHub's codeload tarball), of which only the
CPsyCounD dialogues and CPsyCounE cases are unpacked. With `--base-url` every file is fetched from
`<base>/<path in raw dir>` instead (a mirror, or a local `python -m http.server` serving a raw folder;
the CPsyCoun archive as `<base>/CPsyCoun/CPsyCoun-<commit>.tar.gz`). PsyQA's full data needs a signed
agreement: only the public example file is fetched and the way to obtain the rest is printed.
"""

from __future__ import annotations

import hashlib
import io
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
SOS1K_COMMIT = "1322c3b09bb9cc283eb840fe3b27a03d775894f4"  # HongzhiQ/FineGrainedSuicideDetection (SOS-1K)
SOS1K = f"https://raw.githubusercontent.com/HongzhiQ/FineGrainedSuicideDetection/{SOS1K_COMMIT}/suicideDataProcessing/data"
MD5 = {  # known checksums of upstream files
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


def manifest() -> dict[str, list[Item]]:
    return {
        "cpsycoun": [Item(f"CPsyCoun/CPsyCoun-{CPSYCOUN_COMMIT}.tar.gz", CPSYCOUN_ARCHIVE, unpack="CPsyCoun")],
        "psydt": [Item(f"PsyDTCorpus/{n}", f"{PSYDT}/{n}") for n in
                  ("PsyDTCorpus_train_mulit_turn_packing.json", "PsyDTCorpus_test_single_turn_split.json")],
        "psyqa": [Item("PsyQA/PsyQA_example.json", f"{PSYQA}/PsyQA_example.json")],
        "emotion": [Item(f"emotion/{s}.txt", f"{EMOTION_HF}/{hf}-00000-of-00001.parquet", _parquet_to_txt)
                    for s, hf in (("train", "train"), ("val", "validation"), ("test", "test"))],
        "longemotion": [Item("LongEmotion/Emotion_Summary_origin.jsonl", f"{LONGEMOTION}/Emotion_Summary_origin.jsonl")],
        "sos1k": [Item(f"SOS-1K/fold{k}{suffix}.tsv", f"{SOS1K}/{folder}/fold{k}{suffix}.tsv")
                  for k in range(1, 6) for folder, suffix in (("fine-grained", ""), ("binary", "_twoClass"))],
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
            data = convert(data)
        want = MD5.get(it.rel) if convert is None else None  # a converted file need not be byte-identical
        if want and hashlib.md5(data).hexdigest() != want:
            return it, f"md5 mismatch (got {hashlib.md5(data).hexdigest()}, want {want})"
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
    if failures or missing_optional:  # keep a record next to the data
        atomic_write_text(raw_dir / "download_failures.txt", "".join(f + "\n" for f in failures))
    return failures
