"""`psyfactory crisis-check | crisis-detector`: the crisis net without a model (psyfactory.crisis)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_check(args: argparse.Namespace) -> int:
    from psyfactory.crisis import CheckError, check_file, default_net, format_counts

    if not args.file.strip():
        raise CheckError("which file? FILE=<texts.tsv|.csv|.jsonl|.txt> (make crisis-check FILE=posts.tsv COLUMN=text)")
    net = default_net(None if args.detector == "none" else args.detector, args.lexicon)
    path = Path(args.file)
    res = check_file(path, args.column, net, Path(args.out) if args.out else None)
    print(format_counts(res, path))
    return 0


def cmd_detector(args: argparse.Namespace) -> int:
    from psyfactory.crisis import train_detector

    train_detector(Path(args.raw_dir), args.name, force=args.force, lexicon=args.lexicon)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from psyfactory.core.detector import DEFAULT_DETECTOR, DETECTORS

    lexicon = "evaluation/safety/crisis_lexicon.yaml"
    p = sub.add_parser("crisis-check", help="the crisis net (lexicon OR detector) on a .tsv/.csv/.jsonl/.txt file of "
                       "texts: one decision per record to <file>.crisis.jsonl, counts printed; no model")
    p.add_argument("file", help="texts: .txt (one per line), .tsv/.csv (header row), .jsonl (objects)")
    p.add_argument("--column", default=None, help="the column / key holding the texts (default: text, comment, "
                   "content, post, message, input, prompt, sentence, query, or the only one)")
    p.add_argument("--out", default=None, help="where the decisions go (default: <file stem>.crisis.jsonl beside it)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=[*DETECTORS, "none"],
                   help="the learned detector beside the lexicon (default %(default)s; used when trained, "
                        "`make crisis-detector`); none: the lexicon alone")
    p.add_argument("--lexicon", default=lexicon, help="crisis lexicon file (default %(default)s)")
    p.set_defaults(func=cmd_check)
    d = sub.add_parser("crisis-detector", help="train the crisis detector from the raw folder (SOS-1K folds + "
                       "CPsyCounD), cached under $PSY_CACHE_DIR/crisis_detectors/ by its data's sha256")
    d.add_argument("--raw-dir", default="raw/", help="raw data folder (default raw/)")
    d.add_argument("--name", default=DEFAULT_DETECTOR, choices=list(DETECTORS))
    d.add_argument("--force", action="store_true", help="retrain even when the cached model's data are unchanged")
    d.add_argument("--lexicon", default=lexicon, help="crisis lexicon the net pairs it with (default %(default)s)")
    d.set_defaults(func=cmd_detector)
