"""OpenAI-compatible chat client for teacher labelling and LLM judges, with validated-JSON retries.

Any OpenAI-compatible server works: vLLM, `llamafactory-cli api` (see psyfactory.serve), llama.cpp's
server, hosted APIs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = "EMPTY"
    timeout: float = 120.0

    @staticmethod
    def env_key(prefix: str = "PSY_TEACHER") -> str:
        """The API key from the environment (`<prefix>_API_KEY`, else OPENAI_API_KEY); keys never come
        from configs, which are written to disk."""
        return os.environ.get(f"{prefix}_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"

    @classmethod
    def from_env(cls, prefix: str = "PSY_TEACHER") -> Endpoint | None:
        """PSY_TEACHER_BASE_URL, PSY_TEACHER_MODEL, PSY_TEACHER_API_KEY (or OPENAI_API_KEY)."""
        url = os.environ.get(f"{prefix}_BASE_URL")
        if not url:
            return None
        return cls(
            base_url=url,
            model=os.environ.get(f"{prefix}_MODEL", "default"),
            api_key=cls.env_key(prefix),
        )


@dataclass
class JSONResult:
    value: Any  # the validated value, or None after all attempts failed
    attempts: int
    reasons: list[list[str]] = field(default_factory=list)  # failure reasons per failed attempt
    raw: list[str] = field(default_factory=list)  # raw reply text per attempt

    @property
    def ok(self) -> bool:
        return self.value is not None


# A validator maps reply text to (value, reasons); value is None when reasons is non-empty.
Validator = Callable[[str], tuple[Any, list[str]]]


class ChatClient:
    def __init__(self, endpoint: Endpoint, *, max_tokens: int = 256, temperature: float = 0.0) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key,
                              timeout=endpoint.timeout, max_retries=2)

    def complete(self, messages: list[dict[str, str]], **kw: Any) -> str:
        resp = self._client.chat.completions.create(
            model=self.endpoint.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=kw.pop("max_tokens", self.max_tokens),
            temperature=kw.pop("temperature", self.temperature),
            **kw,
        )
        return resp.choices[0].message.content or ""

    def complete_json(self, messages: list[dict[str, str]], validate: Validator, *, retries: int = 2) -> JSONResult:
        """Ask, validate, re-ask up to `retries` more times; never guesses a value."""
        result = JSONResult(value=None, attempts=0)
        for _ in range(retries + 1):
            result.attempts += 1
            text = self.complete(messages)
            result.raw.append(text)
            value, reasons = validate(text)
            if not reasons:
                result.value = value
                return result
            result.reasons.append(reasons)
        return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
