"""The model interface eval plugins call. Implementations: psyfactory.inference (transformers,
vLLM) and psyfactory.gguf.backend (llama.cpp). Each takes one `GenerationSpec` per call."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from psyfactory.core.generation import GenerationSpec

Conversation = list[dict[str, str]]
# A conversation that is one message with this role is a plain prompt: fed to the model as it is,
# without the chat template (completion style, as some benchmarks' authors ran them).
PLAIN = "prompt"


def plain(text: str) -> Conversation:
    return [{"role": PLAIN, "content": text}]


def is_plain(conversation: Conversation) -> bool:
    return len(conversation) == 1 and conversation[0].get("role") == PLAIN


def plain_text(conversation: Conversation) -> str:
    """The text a plain rendering feeds the model: a plain prompt as it is, else the messages' texts
    one per line (`psy.generation.prompt: plain`)."""
    if is_plain(conversation):
        return conversation[0]["content"]
    return "\n".join(m["content"] for m in conversation)


def renders_plain(conversation: Conversation, spec: GenerationSpec | None) -> bool:
    return is_plain(conversation) or (spec is not None and spec.prompt == "plain")


@runtime_checkable
class Backend(Protocol):
    """What the eval plugins need from a model."""

    name: str

    def generate(self, conversations: list[Conversation], spec: GenerationSpec, *,
                 json_schema: dict | None = None) -> list[str]:
        """Replies, one per conversation, in order, generated as `spec` says (budget, greedy or sampled,
        stop strings, thinking switch, chat template or plain). ``json_schema`` may be used by backends
        that support constrained decoding (llama.cpp grammars); others ignore it."""
        ...

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]], *,
                        spec: GenerationSpec | None = None) -> list[list[float]]:
        """For each prompt, the total log-probability of each option string as the start of the
        assistant reply (or, for a plain prompt, as its continuation); one list per prompt, same
        order as its options. `spec` gives the rendering (thinking switch, chat or plain)."""
        ...
