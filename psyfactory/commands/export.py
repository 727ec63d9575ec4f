"""`psyfactory export`: a run's release folder (model card, weights, GGUF + Ollama Modelfile), optional hub push."""

from __future__ import annotations

import argparse

from psyfactory.commands.common import add_run_args, run_from_args


def cmd_export(args: argparse.Namespace) -> int:
    from psyfactory.release import export, push

    run = run_from_args(args)
    if args.dry_run and not args.push:
        print("[export] --dry-run: no --push (HUB_REPO=) given, so nothing would be uploaded; building the folder")
    rel = export(run, weights=args.weights, quant=args.quant, name=args.ollama_name)
    if args.push:
        push(rel, args.push, dry_run=args.dry_run, private=not args.public)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="runs/<run>/export/: model card (zh+en), weights, GGUF + Ollama Modelfile and "
                                      "the `ollama create` line; --push org/name uploads it to the hub")
    add_run_args(p)
    p.add_argument("--weights", default="auto", choices=("auto", "merged", "adapter", "none"),
                   help="what weights to ship: the merged model (auto when `make merge` made one), the LoRA adapter, "
                        "or none")
    p.add_argument("--quant", default=None, help="the GGUF to ship, model-<QUANT>.gguf (default: what `make gguf` "
                                                 "exported; none when the run has no GGUF)")
    p.add_argument("--ollama-name", default=None, help="the Ollama model name (default psy-<run name>)")
    p.add_argument("--push", default=None, metavar="ORG/NAME",
                   help="upload the folder to this Hugging Face model repository (HF_TOKEN from the environment)")
    p.add_argument("--dry-run", action="store_true", help="with --push: print what would be uploaded, upload nothing")
    p.add_argument("--public", action="store_true", help="with --push: create the repository public (default private)")
    p.set_defaults(func=cmd_export)
