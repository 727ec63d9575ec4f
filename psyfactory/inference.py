"""Batched inference backends for evaluation.

A backend turns chat conversations into replies, as one `GenerationSpec` says (budget, greedy or sampled,
stop strings, thinking switch, chat template or plain text), and, for multiple-choice scoring, gives the
log-probability of candidate continuations. :class:`HFBackend` runs Hugging Face transformers with
left padding, base model + optional PEFT adapter;
:class:`VLLMBackend` is used when vLLM is installed and a CUDA GPU is present. Other backends (e.g.
llama.cpp for GGUF files) implement the same :class:`Backend` protocol.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psyfactory.core.backend import Backend, Conversation, plain_text, renders_plain
from psyfactory.core.errors import EvalError
from psyfactory.core.generation import GenerationSpec, cut_at_stop
from psyfactory.core.labels import strip_think_trimmed as strip_think

log = logging.getLogger(__name__)

__all__ = ["Backend", "Conversation", "HFBackend", "SeqClsBackend", "VLLMBackend", "is_classifier_adapter", "make_backend",
           "strip_think"]


def resolve_dtype(requested: str, device: str) -> str:
    """The weights' dtype a backend loads: `requested` on CUDA (`auto`: bfloat16); float32 on a CPU, whatever
    was asked (half precision there is slow and some kernels lack it)."""
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if requested == "auto" else requested


class HFBackend:
    """transformers generation / scoring; the adapter is merged in memory for speed, or kept apart
    (`merge_adapter=False`) so that :meth:`without_adapter` can answer as the base model too."""

    name = "hf"

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None, *, reasoning: str = "none",
                 batch_size: int = 8, device: str | None = None, dtype: str = "auto", progress: bool = True,
                 lf_template: str | None = None, default_system: str | None = None, merge_adapter: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.progress = progress
        self.reasoning = reasoning
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        if lf_template:  # the run trained with another template than the model's own (psyfactory.templates)
            from psyfactory.templates import apply

            apply(self.tokenizer, lf_template, default_system)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dtype_requested = dtype
        self.dtype = resolve_dtype(dtype, self.device)
        torch_dtype = getattr(torch, self.dtype)
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype)
        if adapter is not None:
            from peft import PeftModel

            if not (Path(adapter) / "adapter_config.json").is_file():
                raise EvalError(f"no PEFT adapter in {adapter} (adapter_config.json missing): train first")
            model = PeftModel.from_pretrained(model, str(adapter))
            if merge_adapter:
                model = model.merge_and_unload()
        self.model = model.to(self.device).eval()
        self.eos_ids = self._eos_ids()
        self.fold_system = not self._supports_system()

    def without_adapter(self) -> Any:
        """Context manager: answer as the base model (needs `merge_adapter=False`)."""
        import contextlib

        disable = getattr(self.model, "disable_adapter", None)
        if disable is None:
            return contextlib.nullcontext()
        return disable()

    # ------------------------------------------------------------------ helpers
    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.add(im_end)
        return sorted(ids)

    def _supports_system(self) -> bool:
        """Some templates (Gemma) reject a system turn; it is then folded into the first user turn,
        as LLaMA-Factory's templates do."""
        try:
            self.tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                               tokenize=False, add_generation_prompt=True)
        except Exception:  # jinja2 TemplateError raised by the template itself
            return False
        return True

    def render(self, conversation: Conversation, spec: GenerationSpec | None = None) -> str:
        """The prompt text: chat template + generation prompt with the spec's thinking switch (off: an
        empty think block for hybrid templates, a closed one for always-thinking templates; `template`:
        the template's own default); a plain conversation, or `prompt: plain`, is its text as it is."""
        spec = spec or GenerationSpec()
        if renders_plain(conversation, spec):
            return plain_text(conversation)
        if self.fold_system and conversation and conversation[0]["role"] == "system":
            system, rest = conversation[0]["content"], [dict(m) for m in conversation[1:]]
            if rest and rest[0]["role"] == "user":
                rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
            conversation = rest
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                                  **spec.template_kwargs(self.reasoning))
        if spec.closes_think(self.reasoning) and text.rstrip().endswith("<think>"):
            text = text.rstrip() + "\n\n</think>\n\n"
        return text

    def _batches(self, order: Sequence[int], desc: str) -> Any:
        from tqdm.auto import tqdm

        chunks = [list(order[i : i + self.batch_size]) for i in range(0, len(order), self.batch_size)]
        return tqdm(chunks, desc=desc, unit="batch", disable=not self.progress or len(chunks) < 2)

    def _encode(self, texts: list[str]) -> dict[str, Any]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        # explicit positions so that left padding does not shift them
        enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return enc

    def _decode(self, ids: Sequence[int]) -> str:
        cut = len(ids)
        for i, t in enumerate(ids):
            if t in self.eos_ids:
                cut = i
                break
        text = self.tokenizer.decode(list(ids[:cut]), skip_special_tokens=False)
        for tok in self.tokenizer.all_special_tokens:  # keep <think> tags: they are counted, then stripped
            if tok not in ("<think>", "</think>"):
                text = text.replace(tok, "")
        return text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ Backend
    def generation_config(self, spec: GenerationSpec) -> Any:
        """transformers' GenerationConfig for a spec (what `generate` passes to the model)."""
        from transformers import GenerationConfig

        decoding: dict[str, Any] = {"do_sample": False}
        if spec.sampled:
            decoding = {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p, "top_k": spec.top_k}
        return GenerationConfig(max_new_tokens=spec.max_new_tokens, num_beams=1, **decoding,
                                stop_strings=list(spec.stop) or None, pad_token_id=self.tokenizer.pad_token_id,
                                eos_token_id=self.eos_ids)

    def generate(self, conversations: list[Conversation], spec: GenerationSpec, *,
                 json_schema: dict | None = None) -> list[str]:
        import torch

        texts = [self.render(c, spec) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch together
        if spec.sampled:
            torch.manual_seed(spec.seed)
        cfg = self.generation_config(spec)
        out: list[str] = [""] * len(texts)
        for idx in self._batches(order, "generate"):
            enc = self._encode([texts[i] for i in idx])
            enc.pop("position_ids")  # generate() derives positions from the attention mask
            with torch.inference_mode():
                gen = self.model.generate(**enc, generation_config=cfg,
                                          tokenizer=self.tokenizer if spec.stop else None)
            width = enc["input_ids"].shape[1]
            for row, i in enumerate(idx):
                out[i] = cut_at_stop(self._decode(gen[row, width:].tolist()), spec.stop)
        return out

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]], *,
                        spec: GenerationSpec | None = None) -> list[list[float]]:
        import torch

        if len(prompts) != len(options):
            raise ValueError(f"{len(prompts)} prompts but {len(options)} option lists")
        texts = [self.render(c, spec) for c in prompts]
        opt_ids = [[self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts] for opts in options]
        if any(not ids for opts in opt_ids for ids in opts):
            raise ValueError("an option encodes to no tokens")
        single = all(len(ids) == 1 for opts in opt_ids for ids in opts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        if single:  # one forward pass per prompt batch: next-token distribution after the prompt
            for idx in self._batches(order, "loglik"):
                enc = self._encode([texts[i] for i in idx])
                with torch.inference_mode():
                    logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()
                logp = torch.log_softmax(logits, dim=-1)
                for row, i in enumerate(idx):
                    out[i] = [float(logp[row, ids[0]]) for ids in opt_ids[i]]
            return out
        # general case (teacher forcing): each prompt batch runs once into a KV cache, then each
        # option index j continues every prompt from that cache (cropped back after each j)
        pad = self.tokenizer.pad_token_id
        out = [[0.0] * len(o) for o in options]
        for idx in self._batches(order, "loglik"):
            enc = self._encode([texts[i] for i in idx])
            width = enc["input_ids"].shape[1]
            with torch.inference_mode():
                res = self.model(**enc, use_cache=True, logits_to_keep=1)
            cache, first = res.past_key_values, torch.log_softmax(res.logits[:, -1, :].float(), dim=-1)
            for j in range(max(len(opt_ids[i]) for i in idx)):
                rows = [opt_ids[i][j] if j < len(opt_ids[i]) else [pad] for i in idx]
                for r, i in enumerate(idx):
                    if j < len(opt_ids[i]):
                        out[i][j] = float(first[r, rows[r][0]])
                span = max(map(len, rows))
                if span == 1:
                    continue
                ids = torch.tensor([row + [pad] * (span - len(row)) for row in rows], device=self.device)
                opt_mask = torch.tensor([[1] * len(row) + [0] * (span - len(row)) for row in rows], device=self.device)
                pos = enc["position_ids"][:, -1:] + 1 + torch.arange(span, device=self.device)[None]
                with torch.inference_mode():
                    logits = self.model(input_ids=ids, attention_mask=torch.cat([enc["attention_mask"], opt_mask], 1),
                                        position_ids=pos, past_key_values=cache, use_cache=True).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                for r, i in enumerate(idx):
                    if j < len(opt_ids[i]):
                        row = rows[r]
                        out[i][j] += float(logp[r, torch.arange(len(row) - 1), torch.tensor(row[1:])].sum())
                cache.crop(width)
        return out


class VLLMBackend:
    """vLLM offline engine (CUDA only); LoRA adapters through ``LoRARequest``. Generation only."""

    name = "vllm"

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None, *, reasoning: str = "none",
                 max_lora_rank: int = 64, lf_template: str | None = None, default_system: str | None = None,
                 dtype: str = "auto") -> None:
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.dtype_requested, self.dtype = dtype, resolve_dtype(dtype, "cuda")
        self.llm = LLM(model=str(model_path), enable_lora=adapter is not None, max_lora_rank=max_lora_rank,
                       dtype=self.dtype)
        self.chat_template: str | None = None
        if lf_template:  # the run trained with another template than the model's own (psyfactory.templates)
            from psyfactory.templates import lf_chat_template

            self.chat_template = lf_chat_template(lf_template, self.llm.get_tokenizer(), default_system)
        self.lora = LoRARequest("adapter", 1, str(adapter)) if adapter is not None else None
        self.reasoning = reasoning

    @staticmethod
    def sampling_params(spec: GenerationSpec) -> Any:
        """vLLM's SamplingParams for a spec."""
        from vllm import SamplingParams

        if spec.sampled:
            return SamplingParams(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k or -1,
                                  seed=spec.seed, max_tokens=spec.max_new_tokens, stop=list(spec.stop) or None)
        return SamplingParams(temperature=0.0, max_tokens=spec.max_new_tokens, stop=list(spec.stop) or None)

    def generate(self, conversations: list[Conversation], spec: GenerationSpec, *,
                 json_schema: dict | None = None) -> list[str]:
        params = self.sampling_params(spec)
        if any(renders_plain(c, spec) for c in conversations):
            outs = self.llm.generate([plain_text(c) for c in conversations], params, lora_request=self.lora,
                                     use_tqdm=True)
        else:
            outs = self.llm.chat(conversations, params, lora_request=self.lora, chat_template=self.chat_template,
                                 chat_template_kwargs=spec.template_kwargs(self.reasoning), use_tqdm=True)
        return [o.outputs[0].text for o in outs]

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]], *,
                        spec: GenerationSpec | None = None) -> list[list[float]]:
        raise NotImplementedError("loglik scoring is implemented by the hf backend only")


class SeqClsBackend:
    """A classifier run's model (METHOD=lora-cls: base + sequence-classification head + LoRA, psyfactory.cls_train):
    no text to generate; `label_logprobs` gives the head's class log-probabilities for the texts under
    assessment, which the `classification` plugin scores like label log-likelihoods."""

    name = "hf-seqcls"

    def __init__(self, model_path: str | Path, adapter: str | Path, *, batch_size: int = 8, device: str | None = None,
                 dtype: str = "auto", **_: Any) -> None:
        import json

        import torch

        from psyfactory.cls_train import CARD_STATE, LABELS_FILE, load_classifier

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.adapter = Path(adapter)
        self.dtype_requested, self.dtype = dtype, resolve_dtype(dtype, self.device)
        self.labels: list[str] = json.loads((self.adapter / LABELS_FILE).read_text(encoding="utf-8"))
        card = self.adapter / CARD_STATE
        state = json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}
        self.max_length = int((state.get("training") or {}).get("max_length") or 512)
        self.tokenizer, model = load_classifier(str(model_path), self.labels, adapter=self.adapter,
                                                dtype=getattr(torch, self.dtype))
        self.model = model.to(self.device).eval()

    def label_logprobs(self, texts: list[str], labels: list[str]) -> list[list[float]]:
        """For each text, the log-probability of each of `labels` (a label the head lacks: -inf)."""
        from psyfactory.cls_train import predict

        logps = predict(self.model, self.tokenizer, texts, self.max_length, self.batch_size)
        index = {lab: i for i, lab in enumerate(self.labels)}
        return [[lp[index[lab]] if lab in index else float("-inf") for lab in labels] for lp in logps]

    def generate(self, conversations: list[Conversation], spec: GenerationSpec, *,
                 json_schema: dict | None = None) -> list[str]:
        raise EvalError("a classification head generates no text: evaluate it with scoring loglik (the default)")

    def option_logprobs(self, prompts: list[Conversation], options: list[list[str]], *,
                        spec: GenerationSpec | None = None) -> list[list[float]]:
        raise EvalError("a classification head scores the labels of a text (label_logprobs), not continuations")

    def after_eval(self, results: dict[str, Any]) -> None:
        """The model card's test metrics (with intervals), from the per-item records of the evaluation."""
        from psyfactory.cls_train import metrics, write_card

        for res in results.values():
            items = getattr(res, "items", None) or []
            if items and all("reference" in it and "label" in it for it in items):
                gold = [it["reference"].strip() for it in items]
                pred = [it["label"] or "(invalid)" for it in items]
                write_card(self.adapter, test=metrics(gold, pred, self.labels))
                return


def is_classifier_adapter(adapter: str | Path | None) -> bool:
    """A peft adapter trained for sequence classification (psyfactory.cls_train)."""
    import json

    if adapter is None:
        return False
    cfg = Path(adapter) / "adapter_config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("task_type") == "SEQ_CLS"
    except (OSError, ValueError):
        return False


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot be used here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def make_backend(kind: str, model_path: str | Path, adapter: str | Path | None = None, *,
                 needs_loglik: bool = False, **kwargs: Any) -> Backend:
    """``kind``: ``hf``, ``vllm`` or ``auto`` (vLLM when usable and no loglik scoring is needed); the GGUF
    backend is psyfactory.gguf.backend.backend_for_run (it reads a run's export, not a model folder)."""
    if kind not in ("hf", "vllm", "auto"):
        raise EvalError(f"unknown backend {kind!r}: use hf, vllm or auto")
    if adapter is not None and is_classifier_adapter(adapter):  # METHOD=lora-cls: its head, through transformers
        if kind == "vllm":
            raise EvalError("--backend vllm: a classification head is evaluated with the hf backend")
        return SeqClsBackend(model_path, adapter, **{k: v for k, v in kwargs.items()
                                                     if k in ("batch_size", "device", "dtype")})
    reason = vllm_unavailable_reason()
    if kind == "vllm":
        if reason:
            raise EvalError(f"--backend vllm: {reason}")
        if needs_loglik:
            raise EvalError("--backend vllm: loglik scoring needs the hf backend")
    if kind == "vllm" or (kind == "auto" and reason is None and not needs_loglik):
        return VLLMBackend(model_path, adapter, **{k: v for k, v in kwargs.items()
                                                   if k in ("reasoning", "lf_template", "default_system", "dtype")})
    if kind == "auto":
        log.info("using the hf backend (%s)", reason or "loglik scoring requested")
    return HFBackend(model_path, adapter, **kwargs)
