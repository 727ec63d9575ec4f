"""OpenAI-compatible chat client for teacher labelling and LLM judges, with validated-JSON retries.

Any OpenAI-compatible server works: vLLM, `llamafactory-cli api` (see psyfactory.serve), llama.cpp's
server, hosted APIs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psyfactory.core import settings


def env_number(var: str, default: float, kind: type = float) -> Any:
    """A non-negative number from the environment (psyfactory.core.settings)."""
    return settings.number(var, default, kind)


_SECRET_PARAM = ("key", "token", "secret", "password", "passwd", "sig", "auth", "credential")


def redact(url: str) -> str:
    """A URL safe to write or print: no `user:password@`, and query parameters that look like credentials
    (`key`, `api_key`, `token`, `sig`...) replaced by `***`."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = urlencode([(k, "***" if any(w in k.lower() for w in _SECRET_PARAM) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc or parts.netloc, parts.path, query, parts.fragment))


def redact_all(value: Any) -> Any:
    """A config or record with every URL in it redacted (nested mappings and lists too)."""
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    return redact(value) if isinstance(value, str) and value.startswith(("http://", "https://")) else value


class MalformedReply(Exception):
    """The server answered, but not with a chat completion (an HTML page, `choices: []`, no message):
    an invalid answer like any other, re-asked within the retries."""


@dataclass
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = "EMPTY"
    timeout: float = 60.0  # seconds per HTTP request ($<prefix>_TIMEOUT)
    max_retries: int = 2  # HTTP-level retries of a failed request ($<prefix>_HTTP_RETRIES)

    @staticmethod
    def env_key(prefix: str = "PSY_TEACHER") -> str:
        """The API key from the environment (`<prefix>_API_KEY`, else OPENAI_API_KEY); keys never come
        from configs, which are written to disk."""
        return settings.get(f"{prefix}_API_KEY") or settings.get("OPENAI_API_KEY") or "EMPTY"

    @classmethod
    def from_env(cls, prefix: str = "PSY_TEACHER", url: str | None = None) -> Endpoint | None:
        """<prefix>_BASE_URL (or `url`), _MODEL, _API_KEY (or OPENAI_API_KEY), _TIMEOUT, _HTTP_RETRIES."""
        url = url or settings.get(f"{prefix}_BASE_URL")
        if not url:
            return None
        return cls(
            base_url=url,
            model=settings.get(f"{prefix}_MODEL") or "default",
            api_key=cls.env_key(prefix),
            timeout=env_number(f"{prefix}_TIMEOUT", 60.0),
            max_retries=env_number(f"{prefix}_HTTP_RETRIES", 2, int),
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
                              timeout=endpoint.timeout, max_retries=endpoint.max_retries)

    def complete(self, messages: list[dict[str, str]], **kw: Any) -> str:
        """The reply text; MalformedReply when the answer is not a chat completion."""
        import openai

        try:
            resp = self._client.chat.completions.create(
                model=self.endpoint.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=kw.pop("max_tokens", self.max_tokens),
                temperature=kw.pop("temperature", self.temperature),
                **kw,
            )
        except openai.APIResponseValidationError as e:
            raise MalformedReply(f"malformed_response: {e}") from None
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            body = resp if isinstance(resp, str) else f"choices={choices!r}"
            raise MalformedReply(f"malformed_response: not a chat completion ({' '.join(str(body).split())[:80]!r})")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if message is None or not (content is None or isinstance(content, str)):
            raise MalformedReply("malformed_response: the first choice has no message text")
        return content or ""

    def complete_json(self, messages: list[dict[str, str]], validate: Validator, *, retries: int = 2,
                      **kw: Any) -> JSONResult:
        """Ask, validate, re-ask up to `retries` more times; never guesses a value. `kw` go to every
        request (e.g. response_format)."""
        result = JSONResult(value=None, attempts=0)
        for _ in range(retries + 1):
            result.attempts += 1
            try:
                text = self.complete(messages, **dict(kw))
            except MalformedReply as e:
                result.raw.append("")
                result.reasons.append([str(e)])
                continue
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
