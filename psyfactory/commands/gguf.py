"""GGUF commands: `gguf` (export + verify + Modelfile) and `chat-gguf` (llama.cpp chat)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from psyfactory import gguf
from psyfactory.config import Composed, compose


def _compose(args: argparse.Namespace) -> Composed:
    return compose(args.model, args.task, args.method, args.hw, args.overrides)


def _local_tokenizer(c: Composed) -> Path | None:
    """Our tiny model's tokenizer is the only one allowed an unknown llama.cpp pre-tokenizer hash."""
    if not c.meta.get("model_ref", "").startswith("builtin:tiny"):
        return None
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


def _options(c: Composed) -> dict:
    return {"enable_thinking": bool(c.lf.get("enable_thinking", False)), "label_task": c.meta.get("kind") == "label"}


def cmd_gguf(args: argparse.Namespace) -> int:
    c = _compose(args)
    try:
        gguf.export_run(c.run_dir, quant=args.quant, local_tokenizer=_local_tokenizer(c), do_verify=not args.no_verify,
                        lora=args.lora, base_dir=c.lf["model_name_or_path"] if args.lora else None, **_options(c))
    except gguf.GGUFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_chat_gguf(args: argparse.Namespace) -> int:
    from psyfactory.gguf_backend import GGUFBackend, gguf_path_for_run, load_schema

    c = _compose(args)
    opts = _options(c)
    max_new = args.max_new_tokens or int(c.meta.get("max_new_tokens", 512))
    try:
        gguf.setup_info()
        model_path, lora = gguf_path_for_run(c.run_dir, args.quant, lora=args.lora)
        schema = None
        if args.schema or (c.task == "student" and not args.no_constrain):
            schema = load_schema(args.schema) if args.schema else load_schema()
        backend = GGUFBackend(model_path, lora_path=lora, enable_thinking=opts["enable_thinking"], progress=False)
    except (gguf.GGUFError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    messages = iter(args.message) if args.message else None
    print(f"[chat-gguf] {model_path}{' + ' + str(lora) if lora else ''}"
          f"{' (JSON-schema constrained)' if schema else ''}; empty line or Ctrl-D quits", file=sys.stderr)
    while True:
        if messages is not None:
            text = next(messages, None)
        else:
            try:
                text = input("user> ")
            except EOFError:
                text = None
        if not text:
            backend.close()
            return 0
        history.append({"role": "user", "content": text})
        reply = backend.generate([history], max_new_tokens=max_new, json_schema=schema)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}" if messages is None else json.dumps({"user": text, "assistant": reply},
                                                                       ensure_ascii=False), flush=True)
        if schema is not None:  # label tasks are single-turn
            history = history[:-2]


def cmd_predict_gguf(args: argparse.Namespace) -> int:
    """Greedy generation over the task's eval set with the GGUF export (LLaMA-Factory's output format)."""
    from psyfactory.evaluate import EvalError, load_samples
    from psyfactory.gguf_backend import GGUFBackend, gguf_path_for_run, load_schema
    from psyfactory.inference import strip_think
    from psyfactory.io import atomic_write_jsonl

    c = _compose(args)
    opts = _options(c)
    try:
        gguf.setup_info()
        model_path, lora = gguf_path_for_run(c.run_dir, args.quant, lora=args.lora)
        samples = load_samples(c.meta.get("eval_dataset", f"{c.task}_eval"), args.limit)
        schema = load_schema() if c.task == "student" and not args.no_constrain else None
        backend = GGUFBackend(model_path, lora_path=lora, enable_thinking=opts["enable_thinking"])
    except (gguf.GGUFError, EvalError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    max_new = args.max_new_tokens or int(c.meta.get("max_new_tokens", 512))
    with backend:
        raw = backend.generate([s.messages for s in samples], max_new_tokens=max_new, json_schema=schema)
        prompts = [backend.prompt(s.messages) for s in samples]
    name = "lora" if args.lora else args.quant.upper()
    out = c.run_dir / "gguf" / f"predict-{name}{'' if schema or c.task != 'student' else '-free'}"
    n = atomic_write_jsonl(out / "generated_predictions.jsonl", [
        {"prompt": p, "predict": strip_think(r)[0], "label": s.reference, "raw": r}
        for p, r, s in zip(prompts, raw, samples, strict=True)])
    print(f"[predict-gguf] {n} predictions ({model_path.name}{', schema-constrained' if schema else ''}): "
          f"{out / 'generated_predictions.jsonl'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from psyfactory.cli import add_run_args

    p = sub.add_parser("gguf", help="merged model -> GGUF f16 + quantized, verified against HF, Ollama Modelfile")
    add_run_args(p)
    p.add_argument("--quant", default=gguf.DEFAULT_QUANT, choices=gguf.QUANTS, type=str.upper)
    p.add_argument("--lora", action="store_true", help="also export the LoRA adapter as a GGUF adapter and verify it")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with the HF model")
    p.set_defaults(func=cmd_gguf)
    p = sub.add_parser("chat-gguf", help="chat with the run's GGUF export through llama.cpp")
    add_run_args(p)
    p.add_argument("--quant", default=gguf.DEFAULT_QUANT, choices=(*gguf.QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--message", action="append", help="non-interactive: send this message (repeatable), print JSON")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.max_new_tokens")
    p.add_argument("--schema", help="constrain replies to this JSON schema (student task default: "
                   "evaluation/schemas/student_labels.json)")
    p.add_argument("--no-constrain", action="store_true", help="student task: don't constrain output to the schema")
    p.set_defaults(func=cmd_chat_gguf)
    p = sub.add_parser("predict-gguf", help="greedy generation on the task's eval set with the run's GGUF export")
    add_run_args(p)
    p.add_argument("--quant", default=gguf.DEFAULT_QUANT, choices=(*gguf.QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--limit", type=int, help="first N eval samples only")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.max_new_tokens")
    p.add_argument("--no-constrain", action="store_true", help="student task: don't constrain output to the schema")
    p.set_defaults(func=cmd_predict_gguf)
