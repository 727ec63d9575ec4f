"""GGUF commands: `gguf` (export + verify + Modelfile), `chat-gguf` (llama.cpp chat), `predict-gguf`."""

from __future__ import annotations

import argparse
import json
import sys

from psyfactory.commands.common import add_run_args, run_from_args
from psyfactory.gguf.common import DEFAULT_QUANT, QUANTS


def _schema(run, path: str | None, no_constrain: bool) -> dict | None:  # noqa: ANN001 (Run)
    """--schema FILE, else the task's psy.label_schema (label tasks), unless --no-constrain."""
    from psyfactory.gguf.backend import load_schema

    if path:
        return load_schema(path)
    if run.task.label_schema is not None and not no_constrain:
        return run.task.label_schema.schema
    return None


def _spec(run, args: argparse.Namespace):  # noqa: ANN001, ANN202 (Run, GenerationSpec)
    """The task's generation spec, with --max-new-tokens when given."""
    gen = run.task.generation
    return gen.merged({"max_new_tokens": args.max_new_tokens}) if args.max_new_tokens else gen


def cmd_gguf(args: argparse.Namespace) -> int:
    from psyfactory.gguf.export import check_exportable, export_for_run

    run = run_from_args(args)
    check_exportable(run)
    if args.check_only:
        return 0
    export_for_run(run, quant=args.quant, lora=args.lora, do_verify=not args.no_verify)
    return 0


def cmd_chat_gguf(args: argparse.Namespace) -> int:
    from psyfactory.gguf.backend import GGUFBackend, gguf_path_for_run
    from psyfactory.gguf.common import setup_info

    run = run_from_args(args)
    spec = _spec(run, args)
    net = run.task.safety_net()  # label tasks: the crisis safety net that `make eval` applies
    setup_info()
    model_path, lora = gguf_path_for_run(run.dir, args.quant, lora=args.lora)
    schema = _schema(run, args.schema, args.no_constrain)
    backend = GGUFBackend(model_path, lora_path=lora, reasoning=run.config.psy.reasoning, progress=False)
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    messages = iter(args.message) if args.message else None
    print(f"[chat-gguf] {model_path}{' + ' + str(lora) if lora else ''}"
          f"{' (JSON-schema constrained)' if schema else ''}"
          f"{f'; crisis safety net on {net.field}: {net.describe()}' if net else ''}; empty line or Ctrl-D quits",
          file=sys.stderr)
    while True:
        if messages is not None:
            text = next(messages, None)
        else:
            try:
                text = input("user> ")
            except (EOFError, KeyboardInterrupt):
                text = None
        if not text or text.strip() in ("exit", "quit"):
            backend.close()
            return 0
        history.append({"role": "user", "content": text})
        reply = backend.generate([history], spec, json_schema=schema)[0]
        history.append({"role": "assistant", "content": reply})
        shown, decision = reply, None
        if net is not None and run.task.label_schema is not None:
            from psyfactory.labelchat import label_reply

            shown, decision = label_reply(reply, run.task.label_schema, net, text)
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
    """Generation over the task's eval set with the GGUF export (LLaMA-Factory's output format)."""
    from psyfactory.core.files import atomic_write_jsonl
    from psyfactory.core.labels import strip_think_trimmed as strip_think
    from psyfactory.evaluate import load_samples
    from psyfactory.gguf.backend import GGUFBackend, gguf_path_for_run
    from psyfactory.gguf.common import setup_info

    run = run_from_args(args)
    spec = _spec(run, args)
    setup_info()
    model_path, lora = gguf_path_for_run(run.dir, args.quant, lora=args.lora)
    samples = load_samples(run.task.require_eval_dataset(), args.limit)
    schema = _schema(run, None, args.no_constrain)
    backend = GGUFBackend(model_path, lora_path=lora, reasoning=run.config.psy.reasoning)
    with backend:
        raw = backend.generate([s.messages for s in samples], spec, json_schema=schema)
        prompts = [backend.prompt(s.messages, spec) for s in samples]
    name = "lora" if args.lora else args.quant.upper()
    out = run.gguf_dir / f"predict-{name}{'' if schema or run.task.label_schema is None else '-free'}"
    n = atomic_write_jsonl(out / "generated_predictions.jsonl", [
        {"prompt": p, "predict": strip_think(r)[0], "label": s.reference, "raw": r}
        for p, r, s in zip(prompts, raw, samples, strict=True)])
    print(f"[predict-gguf] {n} predictions ({model_path.name}{', schema-constrained' if schema else ''}): "
          f"{out / 'generated_predictions.jsonl'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gguf", help="merged model -> GGUF f16 + quantized, verified against HF, Ollama Modelfile")
    add_run_args(p)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=QUANTS, type=str.upper)
    p.add_argument("--lora", action="store_true", help="also export the LoRA adapter as a GGUF adapter and verify it")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with the HF model")
    p.add_argument("--check-only", action="store_true", help="check that the run can be exported, export nothing")
    p.set_defaults(func=cmd_gguf)
    p = sub.add_parser("chat-gguf", help="chat with the run's GGUF export through llama.cpp")
    add_run_args(p)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=(*QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--message", action="append", help="non-interactive: send this message (repeatable), print JSON")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.generation.max_new_tokens")
    p.add_argument("--schema", help="constrain replies to this JSON schema (label tasks default: the task's "
                   "psy.label_schema)")
    p.add_argument("--no-constrain", action="store_true", help="label tasks: don't constrain output to the schema")
    p.set_defaults(func=cmd_chat_gguf)
    p = sub.add_parser("predict-gguf", help="the task's eval set through the run's GGUF export")
    add_run_args(p)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=(*QUANTS, "F16"), type=str.upper)
    p.add_argument("--lora", action="store_true", help="base-f16.gguf + adapter-f16.gguf instead of the merged export")
    p.add_argument("--limit", type=int, help="first N eval samples only")
    p.add_argument("--max-new-tokens", type=int, help="default: the task's psy.generation.max_new_tokens")
    p.add_argument("--no-constrain", action="store_true", help="label tasks: don't constrain output to the schema")
    p.set_defaults(func=cmd_predict_gguf)
