"""Teachers for the `student` task: an OpenAI-compatible endpoint, or the offline heuristic.

Choosing a teacher (`resolve_teacher`):
- a `Teacher` object: used as is;
- "lexicon": `HeuristicTeacher`, a deterministic keyword baseline for demos/tests, NOT a real labeller;
- a `psyfactory.core.llm_client.Endpoint`, a `TeacherEndpoint` or an "http(s)://..." base URL:
  `EndpointTeacher`;
- None: an endpoint from the environment (`PSY_TEACHER_BASE_URL`, `PSY_TEACHER_MODEL`,
  `PSY_TEACHER_API_KEY`, `PSY_TEACHER_RETRIES`), else None (the caller decides: error or skip).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from data_prep import lexicon
from psyfactory.core.errors import DataError

PROMPT_FILE = Path(__file__).parent / "prompts" / "student_teacher.md"
TEACHERS = ("lexicon", "http(s)://<OpenAI-compatible base URL>")
NO_TEACHER = ("no teacher configured. Set PSY_TEACHER_BASE_URL (and PSY_TEACHER_MODEL, "
              "PSY_TEACHER_API_KEY) for an OpenAI-compatible endpoint, or pass --teacher URL; "
              "`--teacher lexicon` selects the offline keyword heuristic (demo/tests only, NOT a real labeller).")


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
        raise DataError(f"{path}: needs '## system' and '## user' sections") from None
    if "{text}" not in user:
        raise DataError(f"{path}: the user section needs a {{text}} placeholder")
    return system.strip(), user.strip()


def prompt_digest(path: Path = PROMPT_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def ordered(labels: dict[str, Any]) -> dict[str, Any]:
    from psyfactory.core.labels import student_schema

    return {k: labels[k] for k in student_schema().keys}


@dataclass(frozen=True)
class TeacherEndpoint:
    """Where the teacher is and how hard to try. `endpoint` is the spine's llm_client.Endpoint."""

    endpoint: Any
    retries: int = 3  # re-asks after an invalid answer (bounded), then the item is quarantined
    workers: int = 4  # concurrent requests
    max_tokens: int = 256  # per reply (raise it for teachers that think before answering)


class HeuristicTeacher:
    """Offline keyword baseline (`--teacher lexicon`). NOT a real labeller: demos and tests only."""

    cache_id = "lexicon-heuristic-v1"
    workers = 1

    def label(self, text: str) -> dict[str, Any]:
        return lexicon.heuristic_labels(text)


class EndpointTeacher:
    """A teacher LLM behind an OpenAI-compatible endpoint (vLLM, llamafactory-cli api, llama.cpp...).

    Each answer is extracted and validated with `psyfactory.core.labels`; an invalid answer is re-asked
    up to `retries` times, then `TeacherError` (-> quarantine). An unreachable endpoint is a DataError
    (stopping the run) rather than thousands of quarantined items.
    """

    def __init__(self, te: TeacherEndpoint, prompt_file: Path = PROMPT_FILE) -> None:
        from psyfactory.core.llm_client import ChatClient

        self.te = te
        self.system, self.template = load_prompt(prompt_file)
        self.cache_id = f"endpoint:{te.endpoint.model}:{prompt_digest(prompt_file)}"
        self.workers = te.workers
        self.client = ChatClient(te.endpoint, max_tokens=te.max_tokens, temperature=0.0)

    def label(self, text: str) -> dict[str, Any]:
        import openai

        from psyfactory.core.labels import parse_student_labels

        def validate(reply: str) -> tuple[Any, list[str]]:
            lp = parse_student_labels(reply)
            return lp.labels, lp.reasons

        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": self.template.replace("{text}", text)}]
        try:
            res = self.client.complete_json(messages, validate, retries=self.te.retries)
        except (openai.APIConnectionError, openai.AuthenticationError, openai.NotFoundError,
                openai.PermissionDeniedError) as e:
            raise DataError(f"teacher endpoint {self.te.endpoint.base_url} (model {self.te.endpoint.model!r}): "
                            f"{type(e).__name__}: {e}") from e
        except openai.APIError as e:  # e.g. a 500 on one request: that item is quarantined
            raise TeacherError(f"{type(e).__name__}: {e}") from e
        if not res.ok:
            last = (res.raw[-1] if res.raw else "")[:120].replace("\n", " ")
            raise TeacherError(f"invalid after {res.attempts} attempts: {res.reasons[-1]}; last reply: {last!r}")
        return ordered(res.value)


def endpoint_from_env() -> TeacherEndpoint | None:
    from psyfactory.core.llm_client import Endpoint

    ep = Endpoint.from_env("PSY_TEACHER")
    return TeacherEndpoint(ep, retries=int(os.environ.get("PSY_TEACHER_RETRIES", "3"))) if ep else None


def resolve_teacher(spec: Any) -> Any:
    if spec is None:
        te = endpoint_from_env()
        return EndpointTeacher(te) if te else None
    if isinstance(spec, str):
        if spec == "lexicon":
            return HeuristicTeacher()
        if spec.startswith(("http://", "https://")):
            from psyfactory.core.llm_client import Endpoint

            env = endpoint_from_env()
            ep = Endpoint(base_url=spec, model=env.endpoint.model if env else "default",
                          api_key=Endpoint.env_key("PSY_TEACHER"))
            return EndpointTeacher(TeacherEndpoint(ep, retries=env.retries if env else 3))
        raise DataError(f"unknown teacher {spec!r}; valid: {', '.join(TEACHERS)}")
    if isinstance(spec, TeacherEndpoint):
        return EndpointTeacher(spec)
    if type(spec).__name__ == "Endpoint" and hasattr(spec, "base_url"):
        return EndpointTeacher(TeacherEndpoint(spec))
    if hasattr(spec, "label") and hasattr(spec, "cache_id"):
        return spec
    raise TypeError(f"teacher must be None, 'lexicon', a URL, an Endpoint/TeacherEndpoint or a Teacher, "
                    f"not {type(spec).__name__}")


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
