"""One generation spec, honoured by every path that generates text: LLaMA-Factory predict and chat,
the transformers and vLLM backends, and llama.cpp (GGUF).

A task sets it under `psy.generation` (docs/configs.md); a benchmark prompt format may override
some keys for itself (e.g. seed 004's chat format keeps the template's own thinking default).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Thinking = bool | Literal["template"]


class GenerationSpec(BaseModel):
    """How to generate: budget, decoding, stop strings, thinking switch, prompt rendering."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(512, ge=1, description="Generation budget in new tokens.")
    decoding: Literal["greedy", "sample"] = Field(
        "greedy", description="`greedy` (deterministic) or `sample` (temperature / top_p / top_k, seeded).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (decoding: sample).")
    top_p: float = Field(0.8, gt=0, le=1, description="Nucleus sampling mass (decoding: sample).")
    top_k: int = Field(20, ge=0, description="Top-k sampling, 0 = off (decoding: sample).")
    seed: int = Field(0, description="Random seed of sampled decoding (repeatable on one backend).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: the reply ends before the first one.")
    thinking: Thinking = Field(
        False, description="Thinking switch of templates that have one (Qwen3, R1 distills): false (an empty "
                           "think block, the default: our data carry no reasoning), true, or `template` (the "
                           "chat template's own default, passed nothing). Also the training template's switch.")
    prompt: Literal["chat", "plain"] = Field(
        "chat", description="`chat`: the model's chat template; `plain`: the message texts as they are, no template "
                            "(completion style, as some benchmarks' authors ran them).")

    @model_validator(mode="after")
    def _check(self) -> GenerationSpec:
        if any(not s for s in self.stop):
            raise ValueError("stop: empty strings are not stop strings")
        return self

    @property
    def sampled(self) -> bool:
        return self.decoding == "sample"

    def merged(self, overrides: dict[str, Any] | None) -> GenerationSpec:
        """This spec with some keys replaced (a prompt format's own settings), validated again."""
        if not overrides:
            return self
        return GenerationSpec.model_validate({**self.model_dump(), **overrides})

    def template_kwargs(self, reasoning: str) -> dict[str, Any]:
        """Keyword arguments for `apply_chat_template` of a model with this reasoning style."""
        if reasoning == "none" or self.thinking == "template":
            return {}
        return {"enable_thinking": bool(self.thinking)}

    def closes_think(self, reasoning: str) -> bool:
        """Always-thinking templates (R1 distills) open <think> in the prompt: close it when thinking is off."""
        return reasoning == "always" and self.thinking is False

    def lf_keys(self) -> dict[str, Any]:
        """LLaMA-Factory's generating arguments for predict / chat (stop strings are applied to its output)."""
        out: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.sampled}
        if self.sampled:
            out.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return out


def cut_at_stop(text: str, stop: list[str]) -> str:
    """`text` up to the first stop string (for paths whose engine has no stop strings)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
