"""Chat formats when a run trains with another LLaMA-Factory template than its model's own.

The model layer's `template` is the model's own chat format; evaluation renders prompts with the
tokenizer's chat template, which is that format. A run may train with another template (seed 002
trained DeepSeek-R1-Distill-Qwen-1.5B with `qwen`, ChatML, instead of `deepseekr1`). Its prompts must
then be rendered the way LLaMA-Factory rendered the training data, so the tokenizer gets LF's own
Jinja rendering of that template (default system prompt included): in the eval backends, and saved
into the merged model, whose tokenizer the GGUF export and Ollama Modelfile carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psyfactory.core.errors import ConfigError


def lf_chat_template(name: str, tokenizer: Any, default_system: str | None = None) -> str:
    """LLaMA-Factory's template `name` as a Jinja chat template for `tokenizer` (LF's own rendering), with the
    run's `default_system` when its config sets one (as LF's training used it)."""
    from dataclasses import replace

    from llamafactory.data.template import TEMPLATES

    if name not in TEMPLATES:
        raise ConfigError(f"template '{name}' is not in LLaMA-Factory's registry")
    template = TEMPLATES[name] if default_system is None else replace(TEMPLATES[name], default_system=default_system)
    return template._get_jinja_template(tokenizer)


def apply(tokenizer: Any, name: str, default_system: str | None = None) -> None:
    """Replace the tokenizer's chat template with LF's template `name`."""
    tokenizer.chat_template = lf_chat_template(name, tokenizer, default_system)


def write_into(model_dir: Path, name: str, default_system: str | None = None) -> None:
    """Save LF's template `name` as the chat template of the model in `model_dir` (the merged export)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    apply(tok, name, default_system)
    tok.save_pretrained(str(model_dir))
    print(f"[psyfactory] {model_dir}: chat template set to LLaMA-Factory's '{name}' (the format the run trained "
          "with)", flush=True)
