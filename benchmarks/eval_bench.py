"""Benchmark: PsychCounsel-Bench per prompt format, scored the ways this repo can score it.

Same model and items for every format: letter log-likelihood (loglik) with the score of always
answering "A" and the permutation-debiased accuracy; generation (greedy, 50 new tokens as in the
seed) with strict and lenient letter extraction and their unparsed counts; the wall time of each and
the loglik/generate speed ratio. Prints a markdown table; `--json` also writes the figures (after
each format, atomically).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/eval_bench.py --model smollm2-135m \
        --bench-file ../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json \
        --formats seed004-professional seed004-simple seed004-chat
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psyfactory.plugins.psychcounsel_bench import (  # noqa: E402
    bias,
    choose_by_generation,
    choose_by_loglik,
    debiased,
    load_bench,
    load_format,
    score,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="configs/models/<name>.yaml")
    ap.add_argument("--adapter", default=None, help="optional PEFT adapter directory")
    ap.add_argument("--bench-file", default="../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json")
    ap.add_argument("--formats", nargs="+", default=["seed004-professional", "seed004-simple", "seed004-chat"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--no-debias", action="store_true", help="skip the permutation-debiased accuracy")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from psyfactory.config import compose
    from psyfactory.core.files import atomic_write_json
    from psyfactory.core.generation import GenerationSpec
    from psyfactory.inference import HFBackend
    from psyfactory.models import materialize

    c = compose(args.model, "psychcounsel", "lora", "auto")
    materialize(c.model_ref)
    backend = HFBackend(c.lf["model_name_or_path"], args.adapter, reasoning=c.psy.reasoning,
                        batch_size=args.batch_size)
    bench = load_bench(args.bench_file, args.limit)
    items = bench.items
    rows, out = [], {"model": args.model, "n_items": len(items), "excluded": bench.excluded, "formats": {},
                     "python": platform.python_version()}
    for name in args.formats:
        fmt = load_format(name)
        t0 = time.perf_counter()
        spec = fmt.spec(GenerationSpec(max_new_tokens=args.max_new_tokens))  # greedy, thinking off
        ll_chosen = choose_by_loglik(items, fmt, backend, spec)
        t_ll = time.perf_counter() - t0
        ll = score(items, ll_chosen)
        b = bias(items, ll_chosen)
        deb = None if args.no_debias else debiased(items, fmt, backend, "loglik", spec)
        t0 = time.perf_counter()
        gen = choose_by_generation(items, fmt, backend, spec)
        t_gen, think = time.perf_counter() - t0, gen.think_blocks
        gs, gl = score(items, gen.letters["strict"]), score(items, gen.letters["lenient"])
        out["formats"][name] = {
            "render": fmt.render, "loglik": {"accuracy": ll["accuracy"], "seconds": t_ll, "predicted": b["predicted"]},
            "always_a": b["always_letter"]["A"], "best_constant": b["best_constant"], "chance": b["chance"],
            "debiased": None if deb is None else {k: v for k, v in deb.items() if k != "per_item"},
            "generate": {"strict": gs["accuracy"], "strict_unparsed": gs["unparsed"], "lenient": gl["accuracy"],
                         "lenient_unparsed": gl["unparsed"], "seconds": t_gen, "think_blocks": think},
            "speed_ratio": t_gen / t_ll if t_ll else None}
        rows.append((name, fmt.render, ll["accuracy"], b["always_letter"]["A"],
                     deb["majority_accuracy"] if deb else None, deb["mean_prob_accuracy"] if deb else None,
                     gs["accuracy"], gs["unparsed"], gl["accuracy"], gl["unparsed"], t_ll, t_gen))
        if args.json:  # after every format, so a long run that dies keeps what it measured
            atomic_write_json(args.json, out)
        print(f"[bench] {name}: loglik {ll['accuracy']:.3f} in {t_ll:.0f}s, generate {gs['accuracy']:.3f} "
              f"(lenient {gl['accuracy']:.3f}) in {t_gen:.0f}s", flush=True)
    print(f"\n{args.model}, {len(items)} items ({len(bench.excluded)} excluded: "
          + ", ".join(f"id {e['id']} {e['reason']}" for e in bench.excluded) + ")\n")
    print("| format | render | loglik acc | always A | debiased (majority) | debiased (mean p) | generate strict "
          "| unparsed | generate lenient | unparsed | loglik s | generate s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"{x:.3f}" if isinstance(x, float) else "-" if x is None else str(x) for x in r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
