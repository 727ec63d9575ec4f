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

from psyfactory.core import settings
from psyfactory.core.errors import DataError
from psyfactory.core.labels import LabelSchema, load_schema
from psyfactory.core.llm_client import redact
from psyfactory.data_prep import lexicon

PROMPT_FILE = Path(__file__).parent / "prompts" / "student_teacher.md"
TEACHERS = ("lexicon", "local (the server of `make teacher`)", "gguf (served for this prep: --teacher-gguf)",
            "http(s)://<OpenAI-compatible base URL>")
RESPONSE_FORMATS = ("none", "json_object", "json_schema")
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
    return {k: labels[k] for k in student_schema().keys}


# The teacher's reply = the 4 labels + whether the text is about a student. The relevance is stored with
# the item (and filters it) but is NOT part of the label the model learns: the training output stays
# exactly the label schema (evaluation/schemas/student_labels.json).
RELEVANCE_KEY = "student_related"
STUDENT_SCHEMA = "evaluation/schemas/student_labels.json"  # the student task's psy.label_schema


def student_schema() -> LabelSchema:
    """The four student labels the teacher gives (configs/tasks/student.yaml names the same file)."""
    return load_schema(STUDENT_SCHEMA)


def reply_schema() -> dict[str, Any]:
    """JSON Schema of a teacher reply: the student label schema plus `student_related` (boolean)."""
    import copy

    schema = copy.deepcopy(student_schema().schema)
    schema["title"] = "Student teacher reply: labels + relevance"
    schema["properties"][RELEVANCE_KEY] = {"type": "boolean"}
    schema["required"] = [*schema["required"], RELEVANCE_KEY]
    return schema


def reply_reasons(value: Any) -> list[str]:
    from psyfactory.core.labels import schema_reasons

    return schema_reasons(value, reply_schema())


def split_reply(reply: Any) -> tuple[dict[str, Any], bool]:
    """(the 4 labels in schema order, student_related) of a valid reply; ValueError with reason codes."""
    reasons = reply_reasons(reply)
    if reasons:
        raise ValueError(f"{', '.join(reasons)}: {str(reply)[:120]}")
    return ordered(reply), bool(reply[RELEVANCE_KEY])


@dataclass(frozen=True)
class TeacherEndpoint:
    """Where the teacher is and how hard to try. `endpoint` is the spine's llm_client.Endpoint."""

    endpoint: Any
    retries: int = 3  # re-asks after an invalid answer (bounded), then the item is quarantined
    workers: int = 4  # concurrent requests
    max_tokens: int = 256  # per reply (raise it for teachers that think before answering)
    max_invalid: float = 0.2  # a larger share of invalid items fails the prep (the old set stays)
    # constrain replies to the label schema: llama.cpp's server takes json_object + schema, vLLM and
    # OpenAI json_schema; none sends no response_format
    response_format: str = "none"
    served: dict[str, Any] | None = None  # the local teacher: what `make teacher` serves (GGUF, pid)


class HeuristicTeacher:
    """Offline keyword baseline (`--teacher lexicon`). NOT a real labeller: demos and tests only."""

    cache_id = "lexicon-heuristic-v2"
    workers = 1
    max_invalid = 0.0  # deterministic: never invalid

    def describe(self) -> dict[str, Any]:
        return {"kind": "lexicon", "id": self.cache_id, "note": "offline keyword heuristic, NOT a real labeller"}

    def label(self, text: str) -> dict[str, Any]:
        return {**lexicon.heuristic_labels(text), RELEVANCE_KEY: lexicon.is_student(text)}


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
        self.max_invalid = te.max_invalid
        self.prompt_file = prompt_file
        self.client = ChatClient(te.endpoint, max_tokens=te.max_tokens, temperature=0.0)

    def request_options(self) -> dict[str, Any]:
        from psyfactory.core.labels import grammar_schema

        kind = self.te.response_format
        if kind == "none":
            return {}
        schema = grammar_schema(reply_schema())
        if kind == "json_object":
            return {"response_format": {"type": "json_object", "schema": schema}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "student_labels", "schema": schema, "strict": True}}}

    def describe(self) -> dict[str, Any]:
        """Who labelled the set (written to the student accounting; never the API key)."""
        from psyfactory.core.paths import shown

        ep = self.te.endpoint
        prompt = shown(self.prompt_file.resolve())
        return {"kind": "endpoint", "id": self.cache_id, "base_url": redact(ep.base_url), "model": ep.model,
                "prompt_file": prompt, "prompt_sha256": hashlib.sha256(self.prompt_file.read_bytes()).hexdigest(),
                "decoding": {"temperature": 0.0, "max_tokens": self.te.max_tokens,
                             "response_format": self.te.response_format},
                **({"served": self.te.served} if self.te.served else {}),
                "retries": self.te.retries, "timeout_s": ep.timeout, "http_retries": ep.max_retries,
                "max_invalid": self.te.max_invalid}

    def label(self, text: str) -> dict[str, Any]:
        """The reply: the 4 labels + `student_related` (see reply_schema)."""
        import openai

        from psyfactory.core.labels import extract_json

        def validate(reply: str) -> tuple[Any, list[str]]:
            ex = extract_json(reply)
            if ex.error:
                return None, [ex.error]
            reasons = reply_reasons(ex.value)
            return (None if reasons else ex.value), reasons

        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": self.template.replace("{text}", text)}]
        try:
            res = self.client.complete_json(messages, validate, retries=self.te.retries, **self.request_options())
        except openai.APITimeoutError as e:
            raise DataError(f"teacher endpoint {redact(self.te.endpoint.base_url)} (model {self.te.endpoint.model!r}) did not "
                            f"answer within {self.te.endpoint.timeout:g} s ({self.te.endpoint.max_retries} HTTP "
                            "retries); set PSY_TEACHER_TIMEOUT / PSY_TEACHER_HTTP_RETRIES") from e
        except (openai.APIConnectionError, openai.AuthenticationError, openai.NotFoundError,
                openai.PermissionDeniedError) as e:
            raise DataError(f"teacher endpoint {redact(self.te.endpoint.base_url)} (model {self.te.endpoint.model!r}): "
                            f"{type(e).__name__}: {e}") from e
        except openai.APIError as e:  # e.g. a 500 on one request: that item is quarantined
            raise TeacherError(f"{type(e).__name__}: {e}") from e
        if not res.ok:
            last = (res.raw[-1] if res.raw else "")[:120].replace("\n", " ")
            raise TeacherError(f"invalid after {res.attempts} attempts: {res.reasons[-1]}; last reply: {last!r}")
        labels, related = split_reply(res.value)
        return {**labels, RELEVANCE_KEY: related}


def endpoint_from_env(url: str | None = None) -> TeacherEndpoint | None:
    """PSY_TEACHER_* settings (the base URL may come from --teacher URL instead): _RETRIES (re-asks of an
    invalid answer, default 3), _MAX_INVALID (share of invalid items that fails the prep, default 0.2),
    _TIMEOUT (seconds per request, 60), _HTTP_RETRIES (2), _MAX_TOKENS (256), _WORKERS (4),
    _RESPONSE_FORMAT (none, json_object, json_schema)."""
    from psyfactory.core.llm_client import Endpoint, env_number

    ep = Endpoint.from_env("PSY_TEACHER", url=url)
    if ep is None:
        return None
    share = env_number("PSY_TEACHER_MAX_INVALID", 0.2)
    if share > 1:
        raise DataError(f"PSY_TEACHER_MAX_INVALID={share} is a share: between 0 and 1")
    fmt = settings.get("PSY_TEACHER_RESPONSE_FORMAT") or "none"
    if fmt not in RESPONSE_FORMATS:
        raise DataError(f"PSY_TEACHER_RESPONSE_FORMAT={fmt!r}; valid: {', '.join(RESPONSE_FORMATS)}")
    return TeacherEndpoint(ep, retries=env_number("PSY_TEACHER_RETRIES", 3, int), max_invalid=share,
                           workers=max(1, env_number("PSY_TEACHER_WORKERS", 4, int)),
                           max_tokens=max(1, env_number("PSY_TEACHER_MAX_TOKENS", 256, int)), response_format=fmt)


def local_endpoint() -> TeacherEndpoint:
    """The teacher `make teacher` serves on loopback (its state file), schema-constrained."""
    from psyfactory.core.paths import local_teacher_file

    path = local_teacher_file()
    start = "start one in another shell with `make teacher` (GGUF=path.gguf; default: the smollm2-135m model)"
    if not path.is_file():
        raise DataError(f"no local teacher is running ({path} not found): {start}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DataError(f"{path}: unreadable local teacher state; {start}") from None
    except ProcessLookupError:
        raise DataError(f"the local teacher of {path} (pid {state['pid']}) is not running any more: {start}") from None
    return served_endpoint(state["base_url"], state["model"], {k: state.get(k) for k in ("gguf", "gguf_sha256", "server")})


def served_endpoint(base_url: str, model: str, served: dict[str, Any]) -> TeacherEndpoint:
    """A llama.cpp server of ours (`make teacher`, `--teacher gguf`): schema-constrained, one request at a time."""
    from dataclasses import replace

    te = endpoint_from_env(url=base_url)
    assert te is not None
    return replace(te, endpoint=replace(te.endpoint, model=model), response_format="json_object", workers=1,
                   served=served)


def resolve_endpoint(spec: str) -> TeacherEndpoint:
    """--teacher local | http(s)://… -> a TeacherEndpoint (settings from PSY_TEACHER_*)."""
    if spec == "local":
        return local_endpoint()
    te = endpoint_from_env(url=spec)
    assert te is not None
    return te


def resolve_teacher(spec: Any) -> Any:
    if spec is None:
        te = endpoint_from_env()
        return EndpointTeacher(te) if te else None
    if isinstance(spec, str):
        if spec == "lexicon":
            return HeuristicTeacher()
        if spec == "local" or spec.startswith(("http://", "https://")):
            return EndpointTeacher(resolve_endpoint(spec))
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
        """A cached valid reply; one without `student_related` (written before it existed) counts as missing."""
        reply = self.data.get(key)
        return reply if reply is not None and RELEVANCE_KEY in reply else None

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
