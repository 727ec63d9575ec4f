"""Subprocess side of the GGUF tools: everything that loads llama.cpp or runs its converter.

llama.cpp can abort() the whole process (a broken vocab, a truncated file), so `psyfactory.gguf`
never calls it in-process: it runs `python -m psyfactory.gguf.worker <command> ...` and reads
a JSON result file. Commands:

  convert  CONVERTER_DIR MODEL_DIR OUTFILE [--lora-base DIR] [--local-tokenizer REF_DIR]
  quantize SRC DST QUANT
  verify   GGUF HF_DIR CONVERSATIONS_JSON RESULT_JSON [--lora GGUF_ADAPTER] [--thinking] [--steps N]
  generate GGUF CONVERSATIONS_JSON RESULT_JSON --max-new-tokens N [--schema FILE] [--lora FILE]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import runpy
import sys
from pathlib import Path
from typing import Any

from psyfactory.core import settings

# llama.cpp pre-tokenizer types whose regex equals a `tokenizers` pre-tokenizer configuration.
_BYTELEVEL_REGEX_PRE = "gpt-2"  # ByteLevel(use_regex=True): the GPT-2 split pattern
_SPLIT_PRE = {  # tokenizers Split regex (Qwen2 / Llama-3 families) -> llama.cpp pre-tokenizer type
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}


def _pre_type_for(tokenizer_json: Path) -> str:
    """The llama.cpp pre-tokenizer whose splitting matches this local tokenizer.json."""
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    splits = [s for s in steps if s.get("type") == "Split"]
    if splits:
        pattern = splits[0].get("pattern", {}).get("Regex", "")
        if pattern in _SPLIT_PRE:
            return _SPLIT_PRE[pattern]
    elif any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return _BYTELEVEL_REGEX_PRE
    raise SystemExit(f"{tokenizer_json}: pre_tokenizer {pre!r} has no llama.cpp equivalent we know")


def _convert(args: argparse.Namespace) -> None:
    conv_dir = Path(args.converter_dir)
    sys.path[:0] = [str(conv_dir / "gguf-py"), str(conv_dir)]
    import conversion.base as base  # the converter's model classes (llama.cpp vendored in the sdist)

    if args.local_tokenizer:
        _allow_local_tokenizer(base, Path(args.local_tokenizer))
    script = "convert_lora_to_gguf.py" if args.lora_base else "convert_hf_to_gguf.py"
    argv = [script, args.model_dir, "--outfile", args.outfile, "--outtype", args.outtype]
    if args.lora_base:
        argv += ["--base", args.lora_base]
    sys.argv = argv
    runpy.run_path(str(conv_dir / script), run_name="__main__")


def _allow_local_tokenizer(base: Any, ref_dir: Path) -> None:
    """Teach the converter ONE extra pre-tokenizer hash: that of our locally trained tokenizer.

    The converter identifies a BPE pre-tokenizer by hashing the token ids of a fixed probe text
    and refuses hashes it does not know. A tokenizer we trained ourselves can never be in its
    table. We accept it only when the model's hash equals the hash of the reference tokenizer
    (`ensure_tiny()`'s), and map it to the llama.cpp pre-tokenizer whose regex matches its
    tokenizer.json; any other unknown tokenizer still fails exactly as before.
    """
    from transformers import AutoTokenizer

    original = base.TextModel.get_vocab_base_pre
    tree = ast.parse(inspect.getsource(original).strip())
    probe = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "chktxt"
    )

    def digest(tok: Any) -> str:
        return hashlib.sha256(str(tok.encode(probe)).encode()).hexdigest()

    ref_hash = digest(AutoTokenizer.from_pretrained(ref_dir))
    pre_type = _pre_type_for(ref_dir / "tokenizer.json")

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        if digest(tokenizer) != ref_hash:
            return original(self, tokenizer)
        print(
            f"[gguf] NOTICE: tokenizer is PsyFactory's locally trained tiny tokenizer (hash {ref_hash[:12]}…), "
            f"unknown to llama.cpp; registering it as pre-tokenizer '{pre_type}' for this conversion only",
            file=sys.stderr,
            flush=True,
        )
        return pre_type

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def _quantize(args: argparse.Namespace) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args.quant.upper()}")  # F16, Q8_0, Q4_K_M, ...
    params.nthread = int(settings.number("PSY_GGUF_THREADS", 0, int))
    params.allow_requantize = args.allow_requantize
    rc = llama_cpp.llama_model_quantize(args.src.encode(), args.dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({args.src} -> {args.quant}) returned {rc}")


def _verify(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psyfactory.gguf.backend import load_llama, render_prompt, special_tokens

    conversations = json.loads(Path(args.conversations).read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(args.hf_dir)
    prompts = [tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False,
                                       enable_thinking=args.thinking) for conv in conversations]
    # fp32 reference; on a GPU node when there is one (an 8B model is 32 GB in fp32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32).to(device).eval()
    # logits_all keeps n_ctx x n_vocab floats: size the context to the prompts, not to 8192
    n_ctx = -(-(max(map(len, prompts)) + args.steps + 8) // 256) * 256
    llm = load_llama(args.gguf, lora=args.lora, logits_all=True, n_ctx=n_ctx)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise SystemExit(f"{args.gguf}: no tokenizer.chat_template in the GGUF metadata")
    bos, eos = special_tokens(llm)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    rows = []
    for conv, hf_ids in zip(conversations, prompts, strict=True):
        text = render_prompt(template, conv, enable_thinking=args.thinking, bos_token=bos, eos_token=eos)
        gg_ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        with torch.no_grad():
            seq = model.generate(torch.tensor([hf_ids], device=device), max_new_tokens=args.steps, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0].tolist()
            hf_logits = model(torch.tensor([seq], device=device)).logits[0].float().cpu().numpy()
        n = len(hf_ids)
        llm.reset()
        llm.eval(seq[:-1] if len(seq) > n else seq)
        gg_logits = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float32)
        positions = list(range(n - 1, max(len(seq) - 1, n)))  # predictions of every generated token
        hf_top = hf_logits[positions].argmax(-1)
        gg_top = gg_logits[positions].argmax(-1)
        err = np.abs(hf_logits[positions] - gg_logits[positions])
        rows.append({
            "tokens_equal": gg_ids == hf_ids, "n_prompt_tokens": n,
            "first_mismatch": next((i for i, (a, b) in enumerate(zip(gg_ids, hf_ids, strict=False)) if a != b),
                                   None if len(gg_ids) == len(hf_ids) else min(len(gg_ids), len(hf_ids))),
            "positions": len(positions), "agree": int((hf_top == gg_top).sum()),
            "max_logit_error": float(err.max()), "mean_logit_error": float(err.mean()),
            "logit_scale": float(np.abs(hf_logits[positions]).max()),
        })
    llm.close()
    _write_json(args.result, {"prompts": rows})


def _generate(args: argparse.Namespace) -> None:
    from psyfactory.core.generation import GenerationSpec
    from psyfactory.gguf.backend import GGUFBackend

    conversations = json.loads(Path(args.conversations).read_text(encoding="utf-8"))
    schema = json.loads(Path(args.schema).read_text(encoding="utf-8")) if args.schema else None
    spec = GenerationSpec(max_new_tokens=args.max_new_tokens, thinking=args.thinking)
    with GGUFBackend(args.gguf, lora_path=args.lora, progress=False) as backend:
        outputs = backend.generate(conversations, spec, json_schema=schema)
    _write_json(args.result, {"outputs": outputs})


def _write_json(path: str, obj: Any) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m psyfactory.gguf.worker")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("convert")
    p.add_argument("converter_dir")
    p.add_argument("model_dir")
    p.add_argument("outfile")
    p.add_argument("--outtype", default="f16")
    p.add_argument("--lora-base")
    p.add_argument("--local-tokenizer")
    p.set_defaults(fn=_convert)
    p = sub.add_parser("quantize")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("quant")
    p.add_argument("--allow-requantize", action="store_true")
    p.set_defaults(fn=_quantize)
    p = sub.add_parser("verify")
    p.add_argument("gguf")
    p.add_argument("hf_dir")
    p.add_argument("conversations")
    p.add_argument("result")
    p.add_argument("--lora")
    p.add_argument("--thinking", action="store_true")
    p.add_argument("--steps", type=int, default=8)
    p.set_defaults(fn=_verify)
    p = sub.add_parser("generate")
    p.add_argument("gguf")
    p.add_argument("conversations")
    p.add_argument("result")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--schema")
    p.add_argument("--lora")
    p.add_argument("--thinking", action="store_true")
    p.set_defaults(fn=_generate)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
