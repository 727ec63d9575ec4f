"""GGUF inference backend (llama.cpp through llama-cpp-python) for predict / eval / chat-gguf.

Same interface as the transformers backend of `psyfactory.inference`:

    backend = GGUFBackend("runs/tiny/student/lora/gguf/model-Q4_K_M.gguf")
    backend.generate(conversations, GenerationSpec(max_new_tokens=64), json_schema=schema)  -> list[str]

Decoding as the spec says (greedy by default), prompts rendered with the chat template embedded in the
GGUF (the one the HF tokenizer had at export). With `json_schema`, sampling is constrained by a llama.cpp grammar built
from the schema, so every output parses and validates; `constrained=False` ignores the schema
(to measure what the constraint buys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.core import settings
from psyfactory.core.backend import plain_text, renders_plain
from psyfactory.core.errors import GGUFError
from psyfactory.core.generation import GenerationSpec, cut_at_stop
from psyfactory.core.labels import grammar_schema
from psyfactory.gguf.common import DEFAULT_QUANT, check_gguf_file, setup_info

DEFAULT_CTX = 8192  # KV cache size in tokens ($PSY_GGUF_CTX); prompt + max_new_tokens must fit


def load_schema(path: str | Path) -> dict[str, Any]:
    """A JSON Schema file to constrain generation with (--schema)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GGUFError(f"{path}: JSON schema not found") from None
    except json.JSONDecodeError as e:
        raise GGUFError(f"{path}:{e.lineno}: invalid JSON schema ({e.msg})") from None


def render_prompt(template: str, conversation: list[dict[str, str]], *, enable_thinking: bool | None,
                  bos_token: str = "", eos_token: str = "") -> str:
    """Render a chat template the way transformers does (sandboxed Jinja, trim/lstrip blocks);
    `enable_thinking=None` passes nothing (the template's own default)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return env.from_string(template).render(
        messages=conversation, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token, **extra)


def load_llama(path: str | Path, *, lora: str | Path | None = None, logits_all: bool = False,
               n_ctx: int | None = None) -> Any:
    """llama_cpp.Llama after a header check (a non-GGUF file raises instead of aborting)."""
    setup_info()
    check_gguf_file(path)
    if lora:
        check_gguf_file(lora)
    import llama_cpp

    threads = int(settings.number("PSY_GGUF_THREADS", 0, int)) or None
    n_ctx = n_ctx or int(settings.number("PSY_GGUF_CTX", DEFAULT_CTX, int))
    return llama_cpp.Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                           logits_all=logits_all, verbose=False, seed=0, n_threads=threads)


def special_tokens(llm: Any) -> tuple[str, str]:
    """(bos, eos) strings of a loaded GGUF, for templates that mention them."""
    def text(tid: int) -> str:
        return llm.detokenize([tid], special=True).decode("utf-8", errors="replace") if tid >= 0 else ""
    return text(llm.token_bos()), text(llm.token_eos())


class GGUFBackend:
    """Chat generation from a GGUF model (optionally + a GGUF LoRA adapter), as a GenerationSpec says.

    Implements the `psyfactory.core.backend.Backend` protocol (generate, option_logprobs). Prompts are
    processed one at a time (llama.cpp's high-level API has no multi-sequence batching); on CPU
    that is still several times faster than transformers (benchmarks/gguf_bench.py).
    """

    name = "gguf"

    def __init__(self, model_path: str | Path, *, lora_path: str | Path | None = None, n_ctx: int | None = None,
                 reasoning: str = "hybrid", constrained: bool = True, progress: bool = True) -> None:
        self.llm = load_llama(model_path, lora=lora_path, n_ctx=n_ctx)
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        if not self.template:
            raise GGUFError(f"{model_path}: GGUF has no embedded chat template (tokenizer.chat_template)")
        self.bos, self.eos = special_tokens(self.llm)
        self.add_bos = self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.reasoning = reasoning  # the model's reasoning style (psy.reasoning): how the thinking switch applies
        self.constrained = constrained
        self.progress = progress
        self._grammars: dict[str, Any] = {}

    def close(self) -> None:
        """Free the llama.cpp model now (avoids llama-cpp-python's noisy __del__ at interpreter exit)."""
        self.llm.close()

    def __enter__(self) -> GGUFBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt(self, conversation: list[dict[str, str]], spec: GenerationSpec | None = None) -> str:
        """The prompt text with the spec's thinking switch and rendering (the same rules as the HF backend)."""
        spec = spec or GenerationSpec()
        if renders_plain(conversation, spec):
            return plain_text(conversation)
        kwargs = spec.template_kwargs(self.reasoning)
        text = render_prompt(self.template, conversation, enable_thinking=kwargs.get("enable_thinking"),
                             bos_token=self.bos, eos_token=self.eos)
        if spec.closes_think(self.reasoning) and text.rstrip().endswith("<think>"):
            text = text.rstrip() + "\n\n</think>\n\n"
        return text

    @staticmethod
    def completion_args(spec: GenerationSpec) -> dict[str, Any]:
        """llama.cpp's create_completion arguments for a spec (besides the prompt and the grammar)."""
        decoding: dict[str, Any] = {"temperature": 0.0, "top_k": 1}
        if spec.sampled:
            decoding = {"temperature": spec.temperature, "top_p": spec.top_p, "top_k": spec.top_k, "seed": spec.seed}
        return {"max_tokens": spec.max_new_tokens, "repeat_penalty": 1.0, "stop": list(spec.stop) or None, **decoding}

    def grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(grammar_schema(schema)), verbose=False)
        return self._grammars[key]

    def generate(self, conversations: list[list[dict[str, str]]], spec: GenerationSpec, *,
                 json_schema: dict | None = None) -> list[str]:
        from tqdm import tqdm

        max_new_tokens = spec.max_new_tokens
        grammar = self.grammar(json_schema) if json_schema is not None and self.constrained else None
        prompts = [self.llm.tokenize(self.prompt(c, spec).encode("utf-8"), add_bos=self.add_bos, special=True)
                   for c in conversations]
        n_ctx = self.llm.n_ctx()
        too_long = [(i, len(p)) for i, p in enumerate(prompts) if len(p) + max_new_tokens > n_ctx]
        if too_long:  # fail before generating anything, not after an hour
            i, n = max(too_long, key=lambda t: t[1])
            raise GGUFError(f"{len(too_long)} prompt(s) + max_new_tokens={max_new_tokens} exceed the GGUF context of "
                             f"{n_ctx} tokens (longest: conversation {i}, {n} tokens); set PSY_GGUF_CTX higher")
        outputs = []
        args = self.completion_args(spec)
        if spec.sampled:
            self.llm.set_seed(spec.seed)
        for ids in tqdm(prompts, desc="gguf generate", unit="conv", disable=not self.progress):
            out = self.llm.create_completion(ids, grammar=grammar, **args)
            outputs.append(cut_at_stop(out["choices"][0]["text"], spec.stop))
        return outputs

    def option_logprobs(self, prompts: list[list[dict[str, str]]], options: list[list[str]], *,
                        spec: GenerationSpec | None = None) -> list[list[float]]:
        """Total log-probability of each option as the start of the assistant reply (teacher forcing)."""
        import numpy as np

        if len(prompts) != len(options):
            raise ValueError(f"{len(prompts)} prompts but {len(options)} option lists")

        import llama_cpp

        n_vocab = self.llm.n_vocab()

        def last_logprobs() -> Any:
            # logits of the last evaluated token (Llama.scores is only filled with logits_all=True)
            ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
            row = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
            return row - row.max() - np.log(np.exp(row - row.max()).sum())

        out = []
        for conv, opts in zip(prompts, options, strict=True):
            ids = self.llm.tokenize(self.prompt(conv, spec).encode("utf-8"), add_bos=self.add_bos, special=True)
            self.llm.reset()
            self.llm.eval(ids)
            first = last_logprobs()
            scores = []
            for opt in opts:
                opt_ids = self.llm.tokenize(opt.encode("utf-8"), add_bos=False, special=False)
                if not opt_ids:
                    raise ValueError(f"option {opt!r} encodes to no tokens")
                total, logp = 0.0, first
                for k, tid in enumerate(opt_ids):
                    total += float(logp[tid])
                    if k + 1 < len(opt_ids):
                        self.llm.n_tokens = len(ids) + k  # drop what a previous option left in the cache
                        self.llm.eval([tid])
                        logp = last_logprobs()
                scores.append(total)
            out.append(scores)
        return out


@dataclass(frozen=True)
class EvalChoice:
    """Which GGUF files `make eval EVAL_ARGS='--backend gguf'` uses: PSY_GGUF_QUANT (Q4_K_M default, Q8_0,
    Q5_K_M, Q6_K, F16), PSY_GGUF_LORA=1 (base-f16 + adapter-f16 instead of the merged export),
    PSY_GGUF_CONSTRAINED=0 (no schema-constrained decoding, to measure what the constraint buys).
    Read once, by the eval command (psyfactory.commands.eval)."""

    quant: str
    lora: bool
    constrained: bool

    @classmethod
    def from_env(cls) -> EvalChoice:
        return cls((settings.get("PSY_GGUF_QUANT") or DEFAULT_QUANT).upper(), settings.flag("PSY_GGUF_LORA", False),
                   settings.flag("PSY_GGUF_CONSTRAINED", True))

    def variant(self) -> str:
        """Eval variant name: runs/<run>/eval/gguf-<QUANT>[-free], next to `tuned` and `base`."""
        return f"gguf-{'lora' if self.lora else self.quant}" + ("" if self.constrained else "-free")


def gguf_path_for_run(run_dir: str | Path, quant: str | None = None, *, lora: bool = False) -> tuple[Path, Path | None]:
    """(model GGUF, adapter GGUF or None) that `make gguf` wrote for a run directory.

    quant: Q4_K_M (default), Q8_0, Q5_K_M, Q6_K, F16. lora=True: base-f16.gguf +
    adapter-f16.gguf (written by `make gguf ARGS=--lora`) instead of the merged export.
    """
    out = Path(run_dir) / "gguf"
    if lora:
        model, adapter = out / "base-f16.gguf", out / "adapter-f16.gguf"
    else:
        quant = (quant or DEFAULT_QUANT).upper()
        model, adapter = out / f"model-{'f16' if quant == 'F16' else quant}.gguf", None
    for path in (model, adapter):
        if path is not None and not path.is_file():
            raise GGUFError(f"{path}: not found; export the run first with `make gguf` "
                            f"(QUANT=..., ARGS=--lora for the adapter files)")
    return model, adapter


def backend_for_run(run_dir: str | Path, choice: EvalChoice, *, reasoning: str = "none") -> GGUFBackend:
    """The GGUF export of a run (`make gguf`), as `choice` picks it (decided once, where the command
    starts: psyfactory.evaluate.EvalRequest)."""
    setup_info()
    model, lora_file = gguf_path_for_run(run_dir, choice.quant, lora=choice.lora)
    be = GGUFBackend(model, lora_path=lora_file, reasoning=reasoning, constrained=choice.constrained)
    be.name = f"gguf ({model.name}{' + ' + lora_file.name if lora_file else ''}" \
              f"{', unconstrained' if not choice.constrained else ''})"
    return be
