"""The embedded `tiny` model: a small Qwen3 with random weights and a locally trained tokenizer.

No model hub is reachable in CI, so tests and `make demo` use this model. It is saved as a normal
Hugging Face checkpoint and loaded by the same `AutoModelForCausalLM` / `AutoTokenizer` code path
(and LLaMA-Factory's loader) as `Qwen/Qwen3-4B`. Sizes are multiples of 256 so that llama.cpp's
K-quants apply to every matrix.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from pathlib import Path

from psyfactory.core.paths import cache_dir

TINY_VERSION = 1  # bump when the recipe below changes: the cache key includes it
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
VOCAB_SIZE = 2048
ARCH = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)

# ChatML, the layout Qwen3 and LLaMA-Factory's `qwen3` template share. With enable_thinking=false
# the generation prompt carries an empty think block, as LF does when it trains with thinking off.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def tiny_path() -> Path:
    return cache_dir() / "models" / f"tiny-v{TINY_VERSION}"


def _train_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (Path(__file__).parent / "assets" / "tiny_corpus.txt").read_text(encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so rare pairs still reach the merge threshold deterministically.
    tok.train_from_iterator(corpus.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:],
        model_max_length=ARCH["max_position_embeddings"],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _build(out: Path, seed: int = 0) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    _train_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    config = Qwen3Config(
        vocab_size=len(tok),
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
        **ARCH,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "psyfactory_tiny.json").write_text(
        json.dumps({"version": TINY_VERSION, "seed": seed, **ARCH}, indent=2) + "\n", encoding="utf-8"
    )


def ensure_tiny() -> Path:
    """Return the tiny model directory, building it on first use (safe under concurrency)."""
    target = tiny_path()
    if (target / "psyfactory_tiny.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "psyfactory_tiny.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
        try:
            _build(tmp)
            tmp.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
