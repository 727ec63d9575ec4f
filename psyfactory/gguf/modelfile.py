"""Ollama Modelfile for a GGUF export, with a TEMPLATE derived from the HF chat template."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.core.errors import GGUFError

_SENTINEL = "\u2063PSY{}\u2063"
ROLES = ("system", "user", "assistant")


def _render(tok: Any, messages: list[dict[str, str]], *, gen: bool, thinking: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, enable_thinking=thinking)


@dataclass
class ChatLayout:
    """A chat template reduced to: a conversation prefix (BOS), per-role (prefix, suffix) wrappers
    and the generation prompt. Templates that are not of this shape (e.g. ones injecting a default
    system prompt) do not reproduce HF and are reported as such by `matches`."""

    wrappers: dict[str, tuple[str, str]]
    generation_prompt: str
    prefix: str = ""

    @classmethod
    def from_tokenizer(cls, tok: Any, *, enable_thinking: bool) -> ChatLayout:
        """Derived by rendering the HF template with sentinel contents (not a hand-written copy).

        With enable_thinking=False the generation prompt keeps whatever the template emits for a
        non-thinking turn (Qwen3: an empty think block), so the model never opens a thinking block.
        """
        from jinja2 import TemplateError

        bos = tok.bos_token or ""
        wrappers, prefix = {}, ""
        for role in ROLES:
            lead = [{"role": "user", "content": "x"}] if role == "assistant" else []
            try:
                text = _render(tok, [*lead, {"role": role, "content": _SENTINEL.format(role)}],
                               gen=False, thinking=enable_thinking)
            except (TemplateError, ValueError) as e:  # e.g. Gemma: "System role not supported"
                if role == "system":
                    continue
                raise GGUFError(f"chat template cannot render a {role} turn: {e}") from e
            if lead:
                text = text.removeprefix(_render(tok, lead, gen=False, thinking=enable_thinking))
            pre, found, post = text.partition(_SENTINEL.format(role))
            if not found:
                raise GGUFError(f"chat template drops {role} content; cannot derive an Ollama template")
            if bos and pre.startswith(bos) and not lead:  # once per conversation, not per message
                pre, prefix = pre[len(bos):], bos
            wrappers[role] = (pre, post)
        one = [{"role": "user", "content": "x"}]
        gen = _render(tok, one, gen=True, thinking=enable_thinking)
        return cls(wrappers, gen.removeprefix(_render(tok, one, gen=False, thinking=enable_thinking)), prefix)

    def render(self, messages: list[dict[str, str]]) -> str:
        """What the Ollama template below produces for `messages` (used to check it against HF)."""
        return self.prefix + "".join(self.wrappers[m["role"]][0] + m["content"] + self.wrappers[m["role"]][1]
                                     for m in messages) + self.generation_prompt

    def matches(self, tok: Any, *, enable_thinking: bool) -> bool:
        """Does the layout reproduce `apply_chat_template` on single- and multi-turn probes?"""
        sys_turn = [{"role": "system", "content": "S"}] if "system" in self.wrappers else []
        probes = [[*sys_turn, {"role": "user", "content": "U"}],
                  [*sys_turn, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                   {"role": "user", "content": "U2"}]]
        return all(self.render(p) == _render(tok, p, gen=True, thinking=enable_thinking) for p in probes)

    def ollama_template(self) -> str:
        """The same layout as an Ollama Go template over .Messages."""
        branches = "".join(
            f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{pre}{{{{ .Content }}}}{post}'
            for i, (role, (pre, post)) in enumerate(self.wrappers.items())
        )
        return self.prefix + "{{- range .Messages }}" + branches + "{{ end }}{{ end }}" + self.generation_prompt


def write_modelfile(gguf_dir: str | Path, gguf_name: str, tokenizer_dir: str | Path, *,
                    enable_thinking: bool, label_task: bool, lora_name: str | None = None,
                    filename: str = "Modelfile") -> Path:
    """gguf_dir/Modelfile for `ollama create NAME -f Modelfile`.

    The TEMPLATE is written only when it provably reproduces the HF chat template; otherwise a
    warning is printed and Ollama falls back to the template embedded in the GGUF.
    """
    from transformers import AutoTokenizer

    from psyfactory.core.files import atomic_write_text

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    layout = None
    try:
        layout = ChatLayout.from_tokenizer(tok, enable_thinking=enable_thinking)
    except GGUFError as e:
        print(f"[gguf] WARNING: {e}", file=sys.stderr)
    if layout is not None and not layout.matches(tok, enable_thinking=enable_thinking):
        print(f"[gguf] WARNING: {tokenizer_dir}: chat template is not a plain per-role layout; the Modelfile "
              "leaves TEMPLATE to the one embedded in the GGUF", file=sys.stderr)
        layout = None
    stops = sorted({t for t in (tok.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
                    if t and t in tok.get_vocab()})
    lines = [f"# Ollama Modelfile written by psyfactory gguf. Usage: ollama create NAME -f {Path(gguf_dir, filename)}",
             f"FROM ./{gguf_name}"]
    if lora_name:
        lines.append(f"ADAPTER ./{lora_name}")
    if layout is not None:
        lines.append(f'TEMPLATE """{layout.ollama_template()}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if label_task:  # label tasks: deterministic, short, no reasoning
        lines += ["PARAMETER temperature 0", "PARAMETER num_predict 128"]
    path = Path(gguf_dir, filename)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


