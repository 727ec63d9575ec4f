"""Prep benchmark: synthetic sources at full published size, in the real raw formats.

Sizes: PsyDTCorpus 4,760 train dialogues (~50 MB) + 240 test dialogues split into ~4,300 turn
records; CPsyCounD 3,134 dialogue files; CPsyCounE 45; PsyQA 22,000 questions / ~56K answers;
Emotion 16K/2K/2K lines; LongEmotion ES 150 records (~16K characters each).
Each task runs in its own process (wall time, peak RSS); the student task uses the offline
heuristic teacher, so it measures the pipeline, not an LLM.

    .venv/bin/python benchmarks/prep_bench.py [--keep DIR] [--tasks psydt,...]
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
        "给自己一点时间", "每天安排一些运动", "和信任的人聊一聊", "你已经做得很好了", "我们下次再继续讨论")
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
from data_prep import prepare
t0 = time.perf_counter()
res = prepare([sys.argv[1]], Path(sys.argv[2]), Path(sys.argv[3]), teacher="lexicon", quiet=True)
wall = time.perf_counter() - t0
# VmHWM: this process's peak RSS (ru_maxrss would include the forking parent's)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_rss_mb": hwm / 1024,
                  "read": {a.source: a.read for a in res[sys.argv[1]]},
                  "samples": {a.source: dict(a.samples) for a in res[sys.argv[1]]}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder")
    ap.add_argument("--tasks", default="psydt,cpsycoun,psyqa,es,emotion,student")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="prep_bench_")
    base = args.keep or Path(tmp.name)
    raw = base / "raw"
    if not raw.exists():
        t0 = time.perf_counter()
        synth(raw)
        size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 2**20
        print(f"synthetic raw data: {size:.0f} MB in {time.perf_counter() - t0:.1f} s -> {raw}")
    total = 0.0
    print(f"{'task':9} {'wall s':>7} {'peak RSS MB':>12}  units read -> samples")
    for task in args.tasks.split(","):
        out = base / "out"
        p = subprocess.run([sys.executable, "-c", CHILD, task, str(raw), str(out)], cwd=REPO, capture_output=True,
                           text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if p.returncode:
            print(p.stderr[-3000:])
            return 1
        r = json.loads(p.stdout.strip().splitlines()[-1])
        total += r["wall_s"]
        print(f"{task:9} {r['wall_s']:7.1f} {r['peak_rss_mb']:12.0f}  {r['read']} -> {r['samples']}")
    print(f"{'all':9} {total:7.1f}  (target: < 60 s on 2 cores); cpus {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
