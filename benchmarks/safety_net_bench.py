"""Benchmark: the crisis safety net on a run, model alone vs model + net, on the hand-written
sentences of evaluation/safety/crisis_sentences.yaml (341 sentences, zh + en; references: the
writer's risk, so a third-person report, a negation or a figure of speech is `none`).

Each sentence becomes one item of the student task (the task's instruction, the sentence as the
client's words; only risk_flag of the reference is meaningful, the other fields are 0), evaluated
with `psyfactory eval` into the variant `crisis-sentences` (`--base`: `crisis-sentences-base`) of
the run, and the json_labels side-by-side figures are printed:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/safety_net_bench.py --run tiny/student/lora
    .venv/bin/python benchmarks/safety_net_bench.py --run smollm2-135m/student/lora --base

The run must be a student run (or any run of a task whose json_labels options name a safety net).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psyfactory.core.paths import EVALUATION_DIR  # noqa: E402

SENTENCES = EVALUATION_DIR / "safety" / "crisis_sentences.yaml"


def write_dataset(root: Path, task: str) -> int:
    """dataset_info.json + data/<task>/eval.jsonl with one alpaca item per sentence."""
    import yaml

    from psyfactory.data_prep.student import SPEAKER, STUDENT_INSTRUCTION

    sentences = yaml.safe_load(SENTENCES.read_text(encoding="utf-8"))["sentences"]
    rows = [{"id": f"s{i:03d}", "instruction": STUDENT_INSTRUCTION, "input": f"{SPEAKER['user']}：{s['text']}",
             "output": json.dumps({"depression_level": 0, "anxiety_level": 0, "risk_flag": s["truth"],
                                   "student_distress_score": 0})} for i, s in enumerate(sentences)]
    path = root / "data" / task / "eval.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps({f"{task}_eval": {"file_name": f"data/{task}/eval.jsonl"}}))
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the run to evaluate, e.g. tiny/student/lora")
    ap.add_argument("--base", action="store_true", help="its base model instead of the adapter")
    ap.add_argument("--hw", default="cpu")
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--json", default=None, help="also write the safety_net figures to this JSON file")
    args = ap.parse_args(argv)

    from psyfactory.cli import main as cli

    variant = "crisis-sentences" + ("-base" if args.base else "")
    with tempfile.TemporaryDirectory() as tmp:
        n = write_dataset(Path(tmp), "student")
        os.environ["PSY_DATASET_DIR"] = tmp
        rc = cli(["eval", "--run", args.run, "--hw", args.hw, "--backend", args.backend, "--batch-size",
                  args.batch_size, "--variant", variant, "--overwrite", *(["--base"] if args.base else [])])
        if rc:
            return rc
    from psyfactory.core import paths

    out = paths.run_dir(args.run) / "eval" / variant
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    jl = m["plugins"]["json_labels"]
    sn = jl["safety_net"]

    def cell(t: dict, key: str) -> str:
        den = t["support"] if key == "recall" else t["predicted"]
        v = t[key] if key == "precision" else t["recall"]
        return f"{t['found']}/{den} = {v:.3f}" if v is not None else f"{t['found']}/{den}"

    print(f"\n{args.run} ({'base' if args.base else 'adapter'}, backend {m['backend']}): {n} sentences, "
          f"valid answers {jl['valid']}/{jl['n']}; net raised {sn['raised']} ({sn['raised_from_none']} from none, "
          f"{sn['raised_from_invalid']} invalid), {sn['raised_wrongly']} wrongly\n")
    print("| class | recall model | recall model+net | recall lexicon | precision model | precision model+net "
          "| precision lexicon |")
    print("|---|---|---|---|---|---|---|")
    for c in sn["model"]:
        print(f"| {c} | " + " | ".join(cell(sn[k][c], key) for key in ("recall", "precision")
                                       for k in ("model", "model_net", "lexicon_alone")) + " |")
    print(f"\nreport: {out / 'report.md'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": args.run, "base": args.base, "n": n, "valid": jl["valid"],
                                               "safety_net": sn}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
