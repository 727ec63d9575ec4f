"""Benchmark: PsychCounsel-Bench scoring by option log-likelihood vs greedy generation.

Same model, same items, same prompt format: wall time of `loglik` (one forward pass per prompt,
option-letter log-probabilities) and of `generate` (greedy, max_new_tokens 50 as in earlier work,
strict letter extraction), the unparsed rate of each, and the speed ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_bench.py --model tiny \
        --bench-file ../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.psychcounsel_bench import (  # noqa: E402
    GENERATE_MAX_NEW_TOKENS,
    choose_by_generation,
    choose_by_loglik,
    load_bench,
    load_format,
    score,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="configs/models/<name>.yaml")
    ap.add_argument("--adapter", default=None, help="optional PEFT adapter directory")
    ap.add_argument("--bench-file", default="../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json")
    ap.add_argument("--format", default="professional", help="prompt format name or YAML path")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=GENERATE_MAX_NEW_TOKENS)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from psyfactory.config import compose
    from psyfactory.inference import HFBackend
    from psyfactory.models import materialize

    c = compose(args.model, "psychcounsel", "lora", "auto")
    materialize(c.model_ref)
    backend = HFBackend(c.lf["model_name_or_path"], args.adapter, reasoning=c.psy.reasoning,
                        batch_size=args.batch_size)
    items = load_bench(args.bench_file, args.limit)
    fmt = load_format(args.format)

    t0 = time.perf_counter()
    ll = score(items, choose_by_loglik(items, fmt, backend))
    t_ll = time.perf_counter() - t0
    t0 = time.perf_counter()
    chosen, _, think = choose_by_generation(items, fmt, backend, args.max_new_tokens)
    gen = score(items, chosen)
    t_gen = time.perf_counter() - t0

    res = {
        "model": args.model, "items": len(items), "format": fmt.name, "batch_size": args.batch_size,
        "device": backend.device, "max_new_tokens": args.max_new_tokens,
        "loglik": {"seconds": t_ll, "accuracy": ll["accuracy"], "unparsed": ll["unparsed"],
                   "unparsed_rate": ll["unparsed"] / len(items)},
        "generate": {"seconds": t_gen, "accuracy": gen["accuracy"], "unparsed": gen["unparsed"],
                     "unparsed_rate": gen["unparsed"] / len(items), "think_blocks": think},
        "speedup": t_gen / t_ll,
    }
    print(f"PsychCounsel-Bench, {len(items)} items, model {args.model}, format {fmt.name}, "
          f"batch {args.batch_size}, {backend.device}")
    print(f"{'mode':9} {'wall s':>8} {'accuracy':>9} {'unparsed':>9}")
    for mode in ("loglik", "generate"):
        r = res[mode]
        print(f"{mode:9} {r['seconds']:8.1f} {r['accuracy']:9.4f} {r['unparsed_rate']:9.2%}")
    print(f"ratio generate/loglik wall time: {res['speedup']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
