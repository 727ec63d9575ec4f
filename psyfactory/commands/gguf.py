"""GGUF commands: `gguf` (export + verify + Modelfile) and `chat-gguf` (llama.cpp chat)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from psyfactory.commands.run import compose_args
from psyfactory.gguf.common import DEFAULT_QUANT, QUANTS

if TYPE_CHECKING:
    from psyfactory.config import Composed


def _local_tokenizer(c: Composed) -> Path | None:
    """Our tiny model's tokenizer is the only one allowed an unknown llama.cpp pre-tokenizer hash."""
    if not c.model_ref.startswith("builtin:tiny"):
        return None
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


def _options(c: Composed) -> dict:
    return {"enable_thinking": bool(c.lf.get("enable_thinking", False)), "label_task": c.psy.kind == "label"}


def _schema(c: Composed, path: str | None, no_constrain: bool) -> dict | None:
    """--schema FILE, else the task's psy.label_schema (label tasks), unless --no-constrain."""
    from psyfactory.gguf.backend import load_schema

    if path:
        return load_schema(path)
    if c.psy.label_schema and not no_constrain:
        from psyfactory.core.labels import load_schema as load_label_schema

        return load_label_schema(c.psy.label_schema).schema
    return None


def cmd_gguf(args: argparse.Namespace) -> int:
    from psyfactory.gguf.export import export_run

    c = compose_args(args)
    export_run(c.run_dir, quant=args.quant, local_tokenizer=_local_tokenizer(c), do_verify=not args.no_verify,
               lora=args.lora, base_dir=c.lf["model_name_or_path"] if args.lora else None, **_options(c))
    return 0


def cmd_chat_gguf(args: argparse.Namespace) -> int:
    from psyfactory.evaluate import task_safety_net
    from psyfactory.gguf.backend import GGUFBackend, gguf_path_for_run
    from psyfactory.gguf.common import setup_info

    c = compose_args(args)
    opts = _options(c)
    max_new = args.max_new_tokens or c.psy.max_new_tokens
    net = task_safety_net(c)  # label tasks: the crisis safety net that `make eval` applies
    setup_info()
    model_path, lora = gguf_path_for_run(c.run_dir, args.quant, lora=args.lora)
    schema = _schema(c, args.schema, args.no_constrain)
    backend = GGUFBackend(model_path, lora_path=lora, enable_thinking=opts["enable_thinking"], progress=False)
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    messages = iter(args.message) if args.message else None
    print(f"[chat-gguf] {model_path}{' + ' + str(lora) if lora else ''}"
          f"{' (JSON-schema constrained)' if schema else ''}"
          f"{f'; crisis safety net {net.lexicon.path.name} on {net.field}' if net else ''}; empty line or Ctrl-D quits",
          file=sys.stderr)
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
        shown, decision = reply, None
        if net is not None:  # task_safety_net returns a net only for tasks with a label schema
            from psyfactory.core.labels import load_schema
            from psyfactory.labelchat import label_reply

            shown, decision = label_reply(reply, load_schema(c.psy.label_schema), net, text)
        if messages is None:
            print(f"assistant> {shown}", flush=True)
            note = decision.note() if decision else None
            if note:
                print(note, flush=True)
        else:
            record = {"user": text, "assistant": shown}
            if decision is not None:
                record["safety_net"] = decision.record()
                if shown != reply:
                    record["model"] = reply
            print(json.dumps(record, ensure_ascii=False), flush=True)
        if schema is not None or net is not None:  # label tasks are single-turn
            history = history[:-2]


def cmd_predict_gguf(args: argparse.Namespace) -> int:
    """Greedy generation over the task's eval set with the GGUF export (LLaMA-Factory's output format)."""
    from psyfactory.core.files import atomic_write_jsonl
    from psyfactory.core.labels import strip_think_trimmed as strip_think
    from psyfactory.evaluate import load_samples
    from psyfactory.gguf.backend import GGUFBackend, gguf_path_for_run
    from psyfactory.gguf.common import setup_info

    c = compose_args(args)
    opts = _options(c)
    setup_info()
    model_path, lora = gguf_path_for_run(c.run_dir, args.quant, lora=args.lora)
    samples = load_samples(c.psy.eval_dataset or f"{c.task}_eval", args.limit)
    schema = _schema(c, None, args.no_constrain)
    backend = GGUFBackend(model_path, lora_path=lora, enable_thinking=opts["enable_thinking"])
    max_new = args.max_new_tokens or c.psy.max_new_tokens
    with backend:
        raw = backend.generate([s.messages for s in samples], max_new_tokens=max_new, json_schema=schema)
        prompts = [backend.prompt(s.messages) for s in samples]
    name = "lora" if args.lora else args.quant.upper()
    out = c.run_dir / "gguf" / f"predict-{name}{'' if schema or not c.psy.label_schema else '-free'}"
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
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=QUANTS, type=str.upper)
    p.add_argument("--lora", action="store_true", help="also export the LoRA adapter as a GGUF adapter and verify it")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with the HF model")
    p.set_defaults(func=cmd_gguf)
    p = sub.add_parser("chat-gguf", help="chat with the run's GGUF export through llama.cpp")
    add_run_args(p)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=(*QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--message", action="append", help="non-interactive: send this message (repeatable), print JSON")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.max_new_tokens")
    p.add_argument("--schema", help="constrain replies to this JSON schema (label tasks default: the task's "
                   "psy.label_schema)")
    p.add_argument("--no-constrain", action="store_true", help="label tasks: don't constrain output to the schema")
    p.set_defaults(func=cmd_chat_gguf)
    p = sub.add_parser("predict-gguf", help="greedy generation on the task's eval set with the run's GGUF export")
    add_run_args(p)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=(*QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--limit", type=int, help="first N eval samples only")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.max_new_tokens")
    p.add_argument("--no-constrain", action="store_true", help="label tasks: don't constrain output to the schema")
    p.set_defaults(func=cmd_predict_gguf)
