"""Prep benchmark: synthetic sources at full published size, in the real raw formats.

Sizes: PsyDTCorpus 4,760 train dialogues (~50 MB) + 240 test dialogues split into ~4,300 turn
records; CPsyCounD 3,134 dialogue files; CPsyCounE 45; PsyQA 22,000 questions / ~56K answers;
Emotion 16K/2K/2K lines; LongEmotion ES 150 records (~16K characters each).
Each task runs in its own process (wall time, peak RSS), with PII scrubbing on (the default) and off
(`--no-scrub`): the difference is the time scrubbing adds. The student task uses the offline heuristic
teacher, so it measures the pipeline, not an LLM. The synthetic text repeats its fragments, so the
tagger's clause cache makes names cheaper than in real text: the scrubber's throughput on the real
samples (../shared/datasets) is measured too, with its recall and false positives on the synthetic PII
set of tests/data_prep/pii_synth.py (identifiers and look-alikes in real dialogue context).

    .venv/bin/python benchmarks/prep_bench.py [--keep DIR] [--tasks psydt,...] [--scrub both|on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FRAG = ("我最近学习压力很大", "考试前总是睡不着", "和室友的关系有些紧张", "父母对我的期望很高", "我觉得自己不够好",
        "上课的时候注意力很难集中", "工作中经常被领导批评", "和男朋友总是吵架", "心里空落落的", "不知道未来该怎么走",
        "听起来你承受了很多", "我们可以一起看看", "你愿意多说一些吗", "这种感受是可以理解的", "试着把担心写下来",
        "给自己一点时间", "每天安排一些运动", "和信任的人聊一聊", "你已经做得很好了", "我们下次再继续讨论",
        "谢谢老师", "班主任王老师找我谈话", "心理老师建议我来", "我的同桌李华同学", "我今年十七岁")
EN = ("The visitor described persistent worry", "sleep problems began after the exam",
      "the counselor used cognitive restructuring", "family conflict increased the stress",
      "the visitor gradually regained confidence", "a graded plan was agreed with the school")


def zh(rng: random.Random, n: int, tag: int) -> str:
    return f"（{tag}）" + "，".join(rng.choice(FRAG) for _ in range(n)) + "。"


def synth(root: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    sys_prompt = "你是一位精通认知行为疗法的心理咨询师。" * 20
    # PsyDT train: ~10.5 KB per dialogue, 4,760 dialogues
    dl = []
    for i in range(4760):
        msgs = [{"role": "system", "content": sys_prompt}]
        for t in range(14):
            msgs += [{"role": "user", "content": zh(rng, 4, i * 100 + t)},
                     {"role": "assistant", "content": zh(rng, 8, i * 100 + t)}]
        dl.append({"id": i, "normalizedTag": "学业", "messages": msgs})
    (root / "PsyDTCorpus").mkdir(parents=True)
    (root / "PsyDTCorpus" / "PsyDTCorpus_train_mulit_turn_packing.json").write_text(
        json.dumps(dl, ensure_ascii=False, indent=4), encoding="utf-8")
    test = []
    for d in range(240):
        msgs = [{"role": "system", "content": sys_prompt}]
        for t in range(18):
            msgs += [{"role": "user", "content": zh(rng, 4, 10**7 + d * 100 + t)},
                     {"role": "assistant", "content": zh(rng, 8, 10**7 + d * 100 + t)}]
            test.append({"id": len(test), "normalizedTag": "学业", "messages": list(msgs)})
    (root / "PsyDTCorpus" / "PsyDTCorpus_test_single_turn_split.json").write_text(
        json.dumps(test[:4311], ensure_ascii=False, indent=4), encoding="utf-8")
    # CPsyCounD: 3,134 files, CRLF in 2/3, no trailing newline, continuation lines, stage directions
    data = root / "CPsyCoun" / "CPsyCounD" / "Data"
    data.mkdir(parents=True)
    for n in range(3134):
        utts = []
        for t in range(rng.randint(6, 14)):
            utts += [f"来访者：{zh(rng, 3, n * 100 + t)}", f"心理咨询师：{zh(rng, 6, n * 100 + t)}\n1. {rng.choice(FRAG)}"]
            if t == 3:
                utts.append("（一段时间后）")
        text = "\n\n".join(utts)
        (data / f"case_{n}.txt").write_bytes((text.replace("\n", "\r\n") if n % 3 else text).encode("utf-8"))
    for topic in ("Career", "Education", "Emotion&Stress", "Family Relationship", "Love&Marriage", "Mental Disease",
                  "Self-growth", "Sex", "Social Relationship"):
        folder = root / "CPsyCoun" / "CPsyCounE" / topic
        folder.mkdir(parents=True)
        for k in range(1, 6):
            items = [f"{'求助者' if j % 2 == 0 else '支持者'}：{zh(rng, 4, k * 100 + j)}" for j in range(12)]
            (folder / f"{k}.json").write_text(json.dumps(items, ensure_ascii=False, indent=4), encoding="utf-8")
    # PsyQA: 22,000 questions, ~2.5 answers each, CRLF
    qs = []
    for q in range(22000):
        answers = [{"answer_text": zh(rng, 25, q * 10 + a), "has_label": a == 0,
                    "labels_sequence": [{"start": 0, "end": 50, "type": "Interpretation"}] if a == 0 else None}
                   for a in range(rng.choice((1, 2, 2, 3, 4)))]
        qs.append({"question": zh(rng, 2, q), "description": zh(rng, 8, q), "keywords": "学业,情绪",
                   "answers": answers, "questionID": q})
    (root / "PsyQA").mkdir()
    (root / "PsyQA" / "PsyQA_example.json").write_bytes(
        json.dumps(qs, ensure_ascii=False, indent=0).replace("\n", "\r\n").encode("utf-8"))
    # Emotion: 20K lines with the real label mix and a few duplicates/conflicts
    labels = ["sadness"] * 29 + ["joy"] * 34 + ["love"] * 8 + ["anger"] * 13 + ["fear"] * 12 + ["surprise"] * 4
    (root / "emotion").mkdir()
    for split, n in (("train", 16000), ("val", 2000), ("test", 2000)):
        lines = [f"i feel {rng.choice(('sad', 'happy', 'calm', 'angry'))} about thing {split}{i};{rng.choice(labels)}"
                 for i in range(n)]
        lines[10] = lines[11] = lines[12].rsplit(";", 1)[0] + ";joy"
        (root / "emotion" / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # LongEmotion ES: 150 records, ~16K characters of input each
    (root / "LongEmotion").mkdir()
    with (root / "LongEmotion" / "Emotion_Summary_origin.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(150):
            rec = {"id": i, "case_description": [f"Case {i}. " + ". ".join(rng.choice(EN) for _ in range(40))],
                   "consultation_process": [". ".join(rng.choice(EN) for _ in range(40)) for _ in range(10)],
                   "experience_and_reflection": ". ".join(rng.choice(EN) for _ in range(30)),
                   "causes": "x", "symptoms": "x", "treatment_process": "x", "characteristics_of_illness": "x",
                   "treatment_effect": "x"}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


CHILD = """
import json, sys, time
from pathlib import Path
from psyfactory.data_prep import prepare
t0 = time.perf_counter()
res = prepare([sys.argv[1]], Path(sys.argv[2]), Path(sys.argv[3]), teacher="lexicon", quiet=True,
              scrub=sys.argv[4] == "on")
wall = time.perf_counter() - t0
# VmHWM: this process's peak RSS (ru_maxrss would include the forking parent's)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_rss_mb": hwm / 1024,
                  "read": {a.source: a.read for a in res[sys.argv[1]]},
                  "samples": {a.source: dict(a.samples) for a in res[sys.argv[1]]},
                  "pii": sum(sum(a.pii.values()) for a in res[sys.argv[1]])}))
"""


def run_task(task: str, raw: Path, out: Path, scrub: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, task, str(raw), str(out), scrub], cwd=REPO, capture_output=True,
                       text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def real_throughput(shared: Path) -> str:
    """The scrubber over the real raw samples: characters per second and replacements per type."""
    from collections import Counter

    from psyfactory.data_prep.pii import Scrubber

    texts = [p.read_text(encoding="utf-8") for p in sorted((shared / "CPsyCoun" / "CPsyCounD" / "Data").glob("*.txt"))]
    texts += [json.dumps(q, ensure_ascii=False) for q in
              json.loads((shared / "PsyQA" / "PsyQA_example.json").read_text(encoding="utf-8"))]
    texts += (shared / "LongEmotion" / "Emotion_Summary_origin.jsonl").read_text(encoding="utf-8").splitlines()
    s = Scrubber()
    s.scrub("预热：我叫王小明。")  # jieba's dictionary load is not the scrubber's cost
    t0 = time.perf_counter()
    for t in texts:
        s.scrub(t)
    secs = time.perf_counter() - t0
    chars = sum(len(t) for t in texts)
    return (f"scrubber on the real samples (CPsyCounD 1,950 dialogues, PsyQA 100, LongEmotion 100): "
            f"{chars / 1e6:.1f} M characters in {secs:.1f} s ({chars / secs / 1e6:.2f} M chars/s); replaced: "
            + ", ".join(f"{k}={v}" for k, v in sorted(Counter(s.counts).items())))


def pii_table() -> str:
    """Recall and false-positive rate per type on the synthetic PII set (600 + 600 cases)."""
    sys.path.insert(0, str(REPO / "tests" / "data_prep"))
    from pii_synth import measure

    found, touched = measure(600)
    lines = ["| identifier type | removed / inserted | recall |", "|---|---|---|"]
    lines += [f"| {k} | {a}/{n} | {a / n:.1%} |" for k, (a, n) in found.items()]
    a, n = sum(v[0] for v in found.values()), sum(v[1] for v in found.values())
    lines += [f"| **all** | {a}/{n} | {a / n:.1%} |", "", "| look-alike | changed / inserted | false positives |",
              "|---|---|---|"]
    lines += [f"| {k} | {a}/{n} | {a / n:.1%} |" for k, (a, n) in touched.items()]
    a, n = sum(v[0] for v in touched.values()), sum(v[1] for v in touched.values())
    return "\n".join([*lines, f"| **all** | {a}/{n} | {a / n:.1%} |"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder")
    ap.add_argument("--tasks", default="psydt,cpsycoun,psyqa,es,es_summary,emotion,student")
    ap.add_argument("--scrub", choices=("both", "on", "off"), default="both", help="PII scrubbing (default both)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets",
                    help="real samples for the scrubber's throughput and the PII set (skipped when missing)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="prep_bench_")
    base = args.keep or Path(tmp.name)
    raw = base / "raw"
    if not raw.exists():
        t0 = time.perf_counter()
        synth(raw)
        size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 2**20
        print(f"synthetic raw data: {size:.0f} MB in {time.perf_counter() - t0:.1f} s -> {raw}")
    modes = ("on", "off") if args.scrub == "both" else (args.scrub,)
    totals = dict.fromkeys(modes, 0.0)
    head = "  ".join(f"{'scrub ' + m + ' s':>11}" for m in modes)
    print(f"{'task':10} {head} {'added s':>8} {'peak RSS MB':>12} {'PII':>6}  units read -> samples")
    for task in args.tasks.split(","):
        r = {m: run_task(task, raw, base / f"out_{m}", m) for m in modes}
        for m in modes:
            totals[m] += r[m]["wall_s"]
        first = r[modes[0]]
        added = f"{r['on']['wall_s'] - r['off']['wall_s']:8.1f}" if len(modes) == 2 else f"{'-':>8}"
        walls = "  ".join(f"{r[m]['wall_s']:11.1f}" for m in modes)
        print(f"{task:10} {walls} {added} {first['peak_rss_mb']:12.0f} {first['pii']:6}  {first['read']} -> "
              f"{first['samples']}")
    walls = "  ".join(f"{totals[m]:11.1f}" for m in modes)
    added = f"{totals['on'] - totals['off']:8.1f}" if len(modes) == 2 else f"{'-':>8}"
    print(f"{'all':10} {walls} {added}  (target: < 60 s on 2 cores); cpus {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.shared.is_dir():
        print("\n" + real_throughput(args.shared) + "\n")
        print(pii_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
