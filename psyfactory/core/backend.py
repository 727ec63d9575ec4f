"""The model interface eval plugins call. Implementations: psyfactory.inference (transformers,
vLLM) and psyfactory.gguf.backend (llama.cpp)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Conversation = list[dict[str, str]]
# A conversation that is one message with this role is a plain prompt: fed to the model as it is,
# without the chat template (completion style, as some benchmarks' authors ran them).
PLAIN = "prompt"


def plain(text: str) -> Conversation:
    return [{"role": PLAIN, "content": text}]


def is_plain(conversation: Conversation) -> bool:
    return len(conversation) == 1 and conversation[0].get("role") == PLAIN


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding (default everywhere: greedy). `seed` makes a run repeatable on one backend."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    seed: int = 0


@runtime_checkable
class Backend(Protocol):
    """What the eval plugins need from a model."""

    name: str

    def generate(self, conversations: list[Conversation], *, max_new_tokens: int,
                 json_schema: dict | None = None, sampling: Sampling | None = None) -> list[str]:
        """Replies, one per conversation, in order: greedy, or sampled with ``sampling``. ``json_schema``
        may be used by backends that support constrained decoding (llama.cpp grammars); others ignore
        it. A plain conversation (:func:`plain`) is fed without the chat template."""
        ...

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]]) -> list[list[float]]:
        """For each prompt, the total log-probability of each option string as the start of the
        assistant reply (or, for a plain prompt, as its continuation); one list per prompt, same
        order as its options."""
        ...
