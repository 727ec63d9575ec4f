"""`psyfactory eval`, `psyfactory compare`, `psyfactory ask` and `psyfactory review`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from psyfactory.commands.common import add_run_args, run_from_args


def cmd_eval(args: argparse.Namespace) -> None:
    from psyfactory.evaluate import run_eval

    gguf = None
    if args.backend == "gguf":  # which export: read once, here (PSY_GGUF_QUANT / _LORA / _CONSTRAINED)
        from psyfactory.gguf.backend import EvalChoice

        gguf = EvalChoice.from_env()
    run = run_from_args(args, eval_task=True)
    out = run_eval(run, base=args.base, backend=args.backend, limit=args.limit, batch_size=args.batch_size,
                   plugins_only=args.plugins, variant=args.variant, overwrite=args.overwrite,
                   allow_unfinished=args.allow_unfinished, gguf=gguf)
    print(f"[psyfactory] eval: {out / 'metrics.json'}\n[psyfactory] report: {out / 'report.md'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from psyfactory.compare import compare

    md, csv_path = compare(Path(args.runs_root) if args.runs_root else None, args.run or None)
    print(md.read_text(encoding="utf-8"))
    print(f"[psyfactory] written: {md}, {csv_path}")


def cmd_ask(args: argparse.Namespace) -> None:
    """One prompt (or a file of prompts, one per line or JSONL with a `prompt` field) answered by the base
    model and the tuned one, side by side; JSON lines with --json."""
    from psyfactory.ask import ask, prompts_from

    run = run_from_args(args, eval_task=True)
    prompts = prompts_from(args.prompt, args.file)
    rows = ask(run, prompts, system=args.system, allow_unfinished=args.allow_unfinished)
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    for i, row in enumerate(rows, 1):
        print(f"=== {i}/{len(rows)} prompt: {row['prompt']}")
        print(f"--- base ({row['base_model']}):\n{row['base']}")
        print(f"--- tuned ({row['tuned_model']}):\n{row['tuned']}")
        for who in ("base", "tuned"):
            if row.get(f"{who}_safety_net"):
                print(f"    [{who}] crisis safety net: {row[f'{who}_safety_net']}")
    sys.stdout.flush()


def cmd_review(args: argparse.Namespace) -> int:
    """Serve the review page of a tuned variant and its base until Ctrl-C."""
    import getpass

    from psyfactory.evaluate import variant_name
    from psyfactory.review import default_review_variant, load_set, load_variant
    from psyfactory.reviewpage import ReviewServer, is_loopback
    from psyfactory.runspec import resolve

    run = run_from_args(args, eval_task=True)
    base_run = resolve(run=args.base_run, hw=args.hw) if args.base_run else run
    tuned = load_variant(run.name, run.dir, args.variant or variant_name(run, base=False))
    if args.base_variant:
        base = load_variant(base_run.name, base_run.dir, args.base_variant)
    else:  # the name `make eval BASE=1` gives this run's base; a bare-model run's is plain `base`
        names = list(dict.fromkeys([variant_name(run, base=True), "base"]))
        found = [n for n in names if (base_run.dir / "eval" / n / "metrics.json").is_file()]
        base = load_variant(base_run.name, base_run.dir, (found or names)[0])
    rs = load_set(tuned, base)
    out = run.dir / "eval" / (args.review_variant or
                              default_review_variant(tuned.name, base_run.name == run.name, base.name))
    reviewer = args.reviewer or getpass.getuser()
    srv = ReviewServer(rs, out, host=args.host, port=args.port, reviewer=reviewer, blind=args.blind)
    n_saved = len(srv.store.records)
    sides = ("blind: sides shuffled per item, names hidden" if args.blind else "base left, tuned right")
    print(f"[psyfactory] review: {len(rs.items)} items of task {rs.task}, {base.label} vs {tuned.label} ({sides})")
    print(f"[psyfactory] judgements: {srv.store.path}" + (f" ({n_saved} saved: the page shows them)" if n_saved else ""))
    if not is_loopback(args.host):
        print(f"[psyfactory] warning: listening on {args.host}: anyone who reaches it can read the items and save "
              "judgements (there is no login); the default 127.0.0.1 with SSH port forwarding is safer")
    tunnel = f"ssh -N -L {srv.port}:127.0.0.1:{srv.port} <this host>"
    print(f"[psyfactory] open {srv.url}  (Ctrl-C stops; from a laptop: {tunnel})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()
    print(f"[psyfactory] review stopped: {len(srv.store.records)} judgements in {srv.store.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the task's eval plugins on a run's adapter (or --base), as a named variant")
    add_run_args(p, external=True)
    p.add_argument("--base", action="store_true", help="evaluate the run's base model (variant 'base')")
    p.add_argument("--variant", default=None,
                   help="name of the result folder runs/<run>/eval/<variant> (default: tuned, base, gguf-<QUANT>...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a variant that holds results of a different evaluation")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="evaluate the adapter of a run whose training stopped before the end")
    p.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto", "gguf"],
                   help="inference backend (auto: vLLM when installed with a GPU and no loglik scoring; "
                   "gguf: the run's `make gguf` export, env PSY_GGUF_QUANT/PSY_GGUF_LORA/PSY_GGUF_CONSTRAINED)")
    p.add_argument("--adapter-task", default=None,
                   help="evaluate the run trained on this task (<model>/<adapter task>/<method>) on TASK")
    p.add_argument("--plugins", nargs="+", default=None, help="run only these plugins (default: the task's list)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples/items only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--raw-dir", default=None,
                   help="raw sources folder for {raw_dir} in benchmark paths (default $PSY_RAW_DIR or ./raw)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("compare", help="every evaluation of the named runs side by side (markdown + CSV)")
    p.add_argument("--run", action="append", default=[], help="a run to include (repeatable; default: every run)")
    p.add_argument("--runs-root", default=None, help="runs root (default: $PSY_RUNS_DIR or ./runs)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("ask", help="answer a prompt (or a file of prompts) with the base and the tuned model, "
                                   "side by side")
    add_run_args(p, external=True)
    p.add_argument("--prompt", default=None, help="the prompt")
    p.add_argument("--file", default=None, help="a file of prompts: one per line (.txt) or JSONL with 'prompt'")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--json", action="store_true", help="one JSON line per prompt instead of text")
    p.add_argument("--allow-unfinished", action="store_true", help="use the adapter of an unfinished run")
    p.add_argument("--adapter-task", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("review", help="a local web page to read base and tuned answers per eval item side by side "
                                      "and record a preference and safety flags (a human-eval variant)")
    add_run_args(p, external=True)
    p.add_argument("--variant", default=None,
                   help="the tuned eval variant (default: the name `make eval` gives: tuned, <task>-tuned, ...)")
    p.add_argument("--base-variant", default=None,
                   help="the base eval variant (default: the name `make eval BASE=1` gives, else base)")
    p.add_argument("--base-run", default=None, help="the run whose base variant to show (default: the same run)")
    p.add_argument("--review-variant", default=None,
                   help="folder of the judgements, runs/<run>/eval/<name> (default: human-review, or "
                        "human-review-<variant> for another pair)")
    p.add_argument("--reviewer", default=None, help="the reviewer's name shown first in the page (default: login name)")
    p.add_argument("--blind", action="store_true",
                   help="hide which answer is which: sides shuffled per item (fixed), no scores beside the answers")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free one)")
    p.add_argument("--adapter-task", default=None,
                   help="review the run trained on this task (<model>/<adapter task>/<method>) evaluated on TASK")
    p.set_defaults(func=cmd_review)
