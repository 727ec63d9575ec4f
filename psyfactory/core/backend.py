"""The model interface eval plugins call. Implementations: psyfactory.inference (transformers,
vLLM) and psyfactory.gguf.backend (llama.cpp)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

Conversation = list[dict[str, str]]


@runtime_checkable
class Backend(Protocol):
    """What the eval plugins need from a model."""

    name: str

    def generate(self, conversations: list[Conversation], *, max_new_tokens: int,
                 json_schema: dict | None = None) -> list[str]:
        """Greedy replies, one per conversation, in order. ``json_schema`` may be used by backends
        that support constrained decoding (llama.cpp grammars); others ignore it."""
        ...

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]]) -> list[list[float]]:
        """For each prompt, the total log-probability of each option string as the start of the
        assistant reply (one list per prompt, same order as its options)."""
        ...
