"""Teachers for the `student` task: an OpenAI-compatible endpoint, or the offline heuristic.

Choosing a teacher (`resolve_teacher`):
- a `Teacher` object: used as is;
- "lexicon": `HeuristicTeacher`, a deterministic keyword baseline for demos/tests, NOT a real labeller;
- a `TeacherEndpoint` or an "http(s)://..." base URL: `EndpointTeacher`;
- None: an endpoint from the environment (`PSY_TEACHER_BASE_URL`, `PSY_TEACHER_MODEL`,
  `PSY_TEACHER_API_KEY`), else None (the caller decides: error or skip).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from data_prep import lexicon

PROMPT_FILE = Path(__file__).parent / "prompts" / "student_teacher.md"
LABEL_KEYS = ("depression_level", "anxiety_level", "risk_flag", "student_distress_score")


class TeacherError(RuntimeError):
    """The teacher gave no valid answer within its retries (the sample is quarantined)."""


class Teacher(Protocol):
    cache_id: str  # identifies teacher + model + prompt: part of the label cache key

    def label(self, text: str) -> dict[str, Any]: ...


def load_prompt(path: Path = PROMPT_FILE) -> tuple[str, str]:
    """(system, user template) from the prompt file."""
    text = path.read_text(encoding="utf-8")
    try:
        _, rest = text.split("## system\n", 1)
        system, user = rest.split("## user\n", 1)
    except ValueError:
        raise ValueError(f"{path}: needs '## system' and '## user' sections") from None
    if "{text}" not in user:
        raise ValueError(f"{path}: the user section needs a {{text}} placeholder")
    return system.strip(), user.strip()


def prompt_digest(path: Path = PROMPT_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def ordered(labels: dict[str, Any]) -> dict[str, Any]:
    return {k: labels[k] for k in LABEL_KEYS}


@dataclass(frozen=True)
class TeacherEndpoint:
    base_url: str
    model: str = "default"
    api_key: str = "none"
    max_retries: int = 3
    timeout_s: float = 120.0
    workers: int = 4


class HeuristicTeacher:
    """Offline keyword baseline (`--teacher lexicon`). NOT a real labeller: demos and tests only."""

    cache_id = "lexicon-heuristic-v1"
    workers = 1

    def label(self, text: str) -> dict[str, Any]:
        return lexicon.heuristic_labels(text)


class EndpointTeacher:
    """A teacher LLM behind an OpenAI-compatible endpoint (vLLM, llamafactory-cli api, llama.cpp...)."""

    def __init__(self, ep: TeacherEndpoint, prompt_file: Path = PROMPT_FILE) -> None:
        self.ep = ep
        self.system, self.template = load_prompt(prompt_file)
        self.cache_id = f"endpoint:{ep.model}:{prompt_digest(prompt_file)}"
        self.workers = ep.workers
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from psyfactory.llm_client import LLMClient

            self._client = LLMClient(base_url=self.ep.base_url, model=self.ep.model, api_key=self.ep.api_key,
                                     timeout=self.ep.timeout_s)
        return self._client

    def label(self, text: str) -> dict[str, Any]:
        from psyfactory.labels import validate_labels

        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": self.template.replace("{text}", text)}]
        try:
            obj = self._get_client().chat_json(messages, validate=validate_labels, retries=self.ep.max_retries)
        except Exception as e:  # the client raises after its bounded retries
            raise TeacherError(f"{type(e).__name__}: {e}") from e
        return ordered(obj)


def endpoint_from_env() -> TeacherEndpoint | None:
    url = os.environ.get("PSY_TEACHER_BASE_URL")
    if not url:
        return None
    return TeacherEndpoint(base_url=url, model=os.environ.get("PSY_TEACHER_MODEL", "default"),
                           api_key=os.environ.get("PSY_TEACHER_API_KEY", "none"),
                           max_retries=int(os.environ.get("PSY_TEACHER_RETRIES", "3")))


def resolve_teacher(spec: Any) -> Any:
    if spec is None:
        ep = endpoint_from_env()
        return EndpointTeacher(ep) if ep else None
    if isinstance(spec, str):
        if spec == "lexicon":
            return HeuristicTeacher()
        if spec.startswith(("http://", "https://")):
            ep = endpoint_from_env()
            return EndpointTeacher(TeacherEndpoint(base_url=spec, model=ep.model if ep else "default",
                                                   api_key=ep.api_key if ep else "none"))
        raise ValueError(f"unknown teacher {spec!r}: use 'lexicon' or an http(s):// base URL")
    if isinstance(spec, TeacherEndpoint):
        return EndpointTeacher(spec)
    if hasattr(spec, "label") and hasattr(spec, "cache_id"):
        return spec
    raise TypeError(f"teacher must be None, 'lexicon', a URL, a TeacherEndpoint or a Teacher, not {type(spec).__name__}")


class LabelCache:
    """Append-only JSONL cache {key, labels}: a rerun never relabels what is done; survives crashes
    (a torn last line is ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.data[rec["key"]] = rec["labels"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        self._fh: Any = None

    @staticmethod
    def key(teacher: Any, text: str) -> str:
        return hashlib.sha256(f"{teacher.cache_id}\x1f{text}".encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, key: str, labels: dict[str, Any]) -> None:
        self.data[key] = labels
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for appends)
            if torn:  # a crash left a partial last line: start a fresh one
                self._fh.write("\n")
        self._fh.write(json.dumps({"key": key, "labels": labels}, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
