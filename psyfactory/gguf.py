"""GGUF export of a run's merged model: f16 -> quantized, verified against HF, Ollama Modelfile.

Pipeline (`psyfactory gguf`, `make gguf`):
  1. merged/ --llama.cpp convert_hf_to_gguf.py--> gguf/model-f16.gguf
  2. llama_model_quantize -> gguf/model-<QUANT>.gguf           (Q4_K_M default)
  3. verification in a subprocess: chat-prompt token ids vs HF `apply_chat_template`, greedy
     next-token agreement and logit error vs the HF model -> gguf/verify.json
  4. gguf/Modelfile for Ollama, built from the model's own chat template
Optionally (`--lora`) the run's LoRA adapter as a GGUF adapter, verified against merged/.

llama.cpp (converter, quantizer, loader) always runs in a child process (`_gguf_worker`): it can
abort the process on a broken file, and the caller must get an error message instead.
The GGUF stack is optional: `make setup-gguf` installs it (see scripts/setup_gguf.sh).
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyfactory.runner import RunError

SETUP_COMMAND = "make setup-gguf"
QUANTS = ("Q4_K_M", "Q8_0", "Q5_K_M", "Q6_K")
DEFAULT_QUANT = "Q4_K_M"
SETUP_INFO = "psyfactory-gguf.json"  # written into the venv by scripts/setup_gguf.sh
# Verification thresholds for the lossless-ish f16 export (quantized exports are only reported).
# Relative logit error = max |Δlogit| / max |HF logit| over the compared positions: llama.cpp
# rounds activations to f16 in its f16 matmuls, so the absolute error grows with the logit scale.
F16_MIN_AGREEMENT = 0.95
F16_MAX_REL_LOGIT_ERROR = 0.02

# A few fixed chat prompts (plus samples of the task's eval set when available).
DEFAULT_PROMPTS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "最近总是失眠，白天也没精神，我该怎么办？"}],
    [{"role": "system", "content": "你是一名温和、专业的心理咨询师。"},
     {"role": "user", "content": "我觉得自己什么都做不好，同学们都比我优秀。"}],
    [{"role": "user", "content": "Give me three short tips for managing exam stress."}],
]


class GGUFError(RunError):
    """A GGUF step failed; the message says which file and why (the CLI prints it, exit code 2)."""


class GGUFUnavailable(GGUFError):
    """The optional GGUF stack (llama-cpp-python + converter) is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"GGUF support is not installed ({what}). Enable it with: {SETUP_COMMAND}")


# ---------------------------------------------------------------- installation
def setup_info() -> dict[str, Any]:
    """What scripts/setup_gguf.sh installed into this environment (raises GGUFUnavailable)."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise GGUFUnavailable("llama-cpp-python is missing from this Python environment")
    path = Path(sys.prefix) / SETUP_INFO
    if not path.is_file():
        raise GGUFUnavailable(f"{path} not found")
    info = json.loads(path.read_text(encoding="utf-8"))
    if not (Path(info["converter_dir"]) / "convert_hf_to_gguf.py").is_file():
        raise GGUFUnavailable(f"llama.cpp converter missing from {info['converter_dir']}")
    return info


def available() -> bool:
    try:
        setup_info()
    except GGUFUnavailable:
        return False
    return True


# ---------------------------------------------------------------- file checks
def check_gguf_file(path: str | Path) -> Path:
    """Cheap header check before llama.cpp sees the file: exists, GGUF magic, known version."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: GGUF file not found (run `make gguf` for this run first)")
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (bad magic {head[:4]!r}, {path.stat().st_size} bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise GGUFError(f"{path}: unsupported GGUF version {version}")
    if n_kv == 0:
        raise GGUFError(f"{path}: GGUF header has no metadata")
    return path


# ---------------------------------------------------------------- subprocess plumbing
def _worker(args: list[str], *, what: str) -> None:
    """Run `python -m psyfactory._gguf_worker ARGS`; a crash or abort becomes a GGUFError.

    stderr is read live: notices, warnings and the converter's verdict are shown as they come (all
    lines with PSY_GGUF_VERBOSE=1); the last lines go into the error message if the child fails.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    verbose = os.environ.get("PSY_GGUF_VERBOSE", "") not in ("", "0")
    tail: deque[str] = deque(maxlen=15)
    with subprocess.Popen([sys.executable, "-m", "psyfactory._gguf_worker", *args], env=env, text=True,
                          stderr=subprocess.PIPE, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if verbose or "NOTICE" in line or "successfully exported" in line or line.startswith("WARNING"):
                print(line, file=sys.stderr, flush=True)
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise GGUFError(f"{what} failed ({how}):\n" + "\n".join(tail))


def _produce(final: Path, args_for: Any, what: str) -> Path:
    """Run a worker that writes `final` via a temp name in the same directory; rename on success only."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp.gguf")
    try:
        _worker(args_for(tmp), what=what)
        check_gguf_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(final)
    return final


def convert(model_dir: str | Path, outfile: str | Path, *, local_tokenizer: str | Path | None = None,
            outtype: str = "f16") -> Path:
    """HF model dir -> GGUF with llama.cpp's convert_hf_to_gguf.py.

    `local_tokenizer`: directory of PsyFactory's locally trained tokenizer (the tiny model's). If
    the model's tokenizer hashes like it, its (unknown to llama.cpp) pre-tokenizer is registered
    for this conversion only, with a printed notice; other tokenizers are unaffected.
    """
    info = setup_info()
    model_dir, outfile = Path(model_dir), Path(outfile)
    if not (model_dir / "config.json").is_file():
        raise GGUFError(f"{model_dir}: no config.json; not a local Hugging Face model directory")
    extra = ["--local-tokenizer", str(local_tokenizer)] if local_tokenizer else []
    return _produce(outfile, lambda tmp: ["convert", info["converter_dir"], str(model_dir), str(tmp),
                                          "--outtype", outtype, *extra], f"convert_hf_to_gguf {model_dir}")


def convert_lora(adapter_dir: str | Path, base_dir: str | Path, outfile: str | Path) -> Path:
    """PEFT LoRA adapter -> GGUF adapter (llama.cpp convert_lora_to_gguf.py), f16."""
    info = setup_info()
    adapter_dir, outfile = Path(adapter_dir), Path(outfile)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise GGUFError(f"{adapter_dir}: no adapter_config.json; expected a PEFT LoRA adapter")
    return _produce(outfile, lambda tmp: ["convert", info["converter_dir"], str(adapter_dir), str(tmp),
                                          "--lora-base", str(base_dir)], f"convert_lora_to_gguf {adapter_dir}")


def quantize(src: str | Path, dst: str | Path, quant: str, *, allow_requantize: bool = False) -> Path:
    """f16 GGUF -> quantized GGUF through llama_model_quantize (llama-cpp-python bindings).

    allow_requantize: accept an already quantized source (quality compounds; used by the benchmark
    for a model that is only published quantized). quant may then also be F16.
    """
    setup_info()
    quant = quant.upper()
    if quant not in QUANTS and not (allow_requantize and quant == "F16"):
        raise GGUFError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    src = check_gguf_file(src)
    extra = ["--allow-requantize"] if allow_requantize else []
    return _produce(Path(dst), lambda tmp: ["quantize", str(src), str(tmp), quant, *extra],
                    f"quantize {src.name} -> {quant}")


# ---------------------------------------------------------------- verification
@dataclass
class Verification:
    gguf: str
    reference: str
    lora: str | None
    prompts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_equal(self) -> bool:
        return all(p["tokens_equal"] for p in self.prompts)

    @property
    def agreement(self) -> float:
        total = sum(p["positions"] for p in self.prompts)
        return sum(p["agree"] for p in self.prompts) / total if total else 0.0

    @property
    def max_logit_error(self) -> float:
        return max((p["max_logit_error"] for p in self.prompts), default=float("nan"))

    @property
    def max_rel_logit_error(self) -> float:
        return max((p["max_logit_error"] / max(p["logit_scale"], 1e-6) for p in self.prompts), default=float("nan"))

    def summary(self) -> dict[str, Any]:
        return {"gguf": self.gguf, "reference": self.reference, "lora": self.lora,
                "tokens_equal": self.tokens_equal, "greedy_agreement": round(self.agreement, 4),
                "max_logit_error": round(self.max_logit_error, 5),
                "max_rel_logit_error": round(self.max_rel_logit_error, 5), "prompts": self.prompts}


def verify(gguf: str | Path, hf_dir: str | Path, *, conversations: list[list[dict[str, str]]] | None = None,
           lora: str | Path | None = None, enable_thinking: bool = False, steps: int = 8) -> Verification:
    """Compare a GGUF (optionally + GGUF LoRA adapter) with the HF model in `hf_dir`, in a subprocess."""
    setup_info()
    gguf = check_gguf_file(gguf)
    if lora:
        check_gguf_file(lora)
    conversations = conversations or DEFAULT_PROMPTS
    with tempfile.TemporaryDirectory(prefix="psy-gguf-") as tmp:
        conv_file, result = Path(tmp, "conversations.json"), Path(tmp, "result.json")
        conv_file.write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
        args = ["verify", str(gguf), str(hf_dir), str(conv_file), str(result), "--steps", str(steps)]
        args += ["--lora", str(lora)] if lora else []
        args += ["--thinking"] if enable_thinking else []
        _worker(args, what=f"verify {gguf.name}")
        rows = json.loads(result.read_text(encoding="utf-8"))["prompts"]
    return Verification(str(gguf), str(hf_dir), str(lora) if lora else None, rows)


def generate(gguf: str | Path, conversations: list[list[dict[str, str]]], *, max_new_tokens: int,
             json_schema: dict | None = None, lora: str | Path | None = None,
             enable_thinking: bool = False) -> list[str]:
    """Greedy generation in a child process (safe against llama.cpp aborts); see gguf_backend."""
    setup_info()
    check_gguf_file(gguf)
    with tempfile.TemporaryDirectory(prefix="psy-gguf-") as tmp:
        conv_file, result = Path(tmp, "conversations.json"), Path(tmp, "result.json")
        conv_file.write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
        args = ["generate", str(gguf), str(conv_file), str(result), "--max-new-tokens", str(max_new_tokens)]
        if json_schema is not None:
            schema_file = Path(tmp, "schema.json")
            schema_file.write_text(json.dumps(json_schema), encoding="utf-8")
            args += ["--schema", str(schema_file)]
        args += ["--lora", str(lora)] if lora else []
        args += ["--thinking"] if enable_thinking else []
        _worker(args, what=f"generate with {Path(gguf).name}")
        return json.loads(result.read_text(encoding="utf-8"))["outputs"]


# ---------------------------------------------------------------- Ollama Modelfile
_SENTINEL = "\u2063PSY{}\u2063"
ROLES = ("system", "user", "assistant")


def _render(tok: Any, messages: list[dict[str, str]], *, gen: bool, thinking: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, enable_thinking=thinking)


@dataclass
class ChatLayout:
    """A chat template reduced to: a conversation prefix (BOS), per-role (prefix, suffix) wrappers
    and the generation prompt. Templates that are not of this shape (e.g. ones injecting a default
    system prompt) do not reproduce HF and are reported as such by `matches`."""

    wrappers: dict[str, tuple[str, str]]
    generation_prompt: str
    prefix: str = ""

    @classmethod
    def from_tokenizer(cls, tok: Any, *, enable_thinking: bool) -> ChatLayout:
        """Derived by rendering the HF template with sentinel contents (not a hand-written copy).

        With enable_thinking=False the generation prompt keeps whatever the template emits for a
        non-thinking turn (Qwen3: an empty think block), so the model never opens a thinking block.
        """
        from jinja2 import TemplateError

        bos = tok.bos_token or ""
        wrappers, prefix = {}, ""
        for role in ROLES:
            lead = [{"role": "user", "content": "x"}] if role == "assistant" else []
            try:
                text = _render(tok, [*lead, {"role": role, "content": _SENTINEL.format(role)}],
                               gen=False, thinking=enable_thinking)
            except (TemplateError, ValueError) as e:  # e.g. Gemma: "System role not supported"
                if role == "system":
                    continue
                raise GGUFError(f"chat template cannot render a {role} turn: {e}") from e
            if lead:
                text = text.removeprefix(_render(tok, lead, gen=False, thinking=enable_thinking))
            pre, found, post = text.partition(_SENTINEL.format(role))
            if not found:
                raise GGUFError(f"chat template drops {role} content; cannot derive an Ollama template")
            if bos and pre.startswith(bos) and not lead:  # once per conversation, not per message
                pre, prefix = pre[len(bos):], bos
            wrappers[role] = (pre, post)
        one = [{"role": "user", "content": "x"}]
        gen = _render(tok, one, gen=True, thinking=enable_thinking)
        return cls(wrappers, gen.removeprefix(_render(tok, one, gen=False, thinking=enable_thinking)), prefix)

    def render(self, messages: list[dict[str, str]]) -> str:
        """What the Ollama template below produces for `messages` (used to check it against HF)."""
        return self.prefix + "".join(self.wrappers[m["role"]][0] + m["content"] + self.wrappers[m["role"]][1]
                                     for m in messages) + self.generation_prompt

    def matches(self, tok: Any, *, enable_thinking: bool) -> bool:
        """Does the layout reproduce `apply_chat_template` on single- and multi-turn probes?"""
        sys_turn = [{"role": "system", "content": "S"}] if "system" in self.wrappers else []
        probes = [[*sys_turn, {"role": "user", "content": "U"}],
                  [*sys_turn, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                   {"role": "user", "content": "U2"}]]
        return all(self.render(p) == _render(tok, p, gen=True, thinking=enable_thinking) for p in probes)

    def ollama_template(self) -> str:
        """The same layout as an Ollama Go template over .Messages."""
        branches = "".join(
            f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{pre}{{{{ .Content }}}}{post}'
            for i, (role, (pre, post)) in enumerate(self.wrappers.items())
        )
        return self.prefix + "{{- range .Messages }}" + branches + "{{ end }}{{ end }}" + self.generation_prompt


def write_modelfile(gguf_dir: str | Path, gguf_name: str, tokenizer_dir: str | Path, *,
                    enable_thinking: bool, label_task: bool, lora_name: str | None = None,
                    filename: str = "Modelfile") -> Path:
    """gguf_dir/Modelfile for `ollama create NAME -f Modelfile`.

    The TEMPLATE is written only when it provably reproduces the HF chat template; otherwise a
    warning is printed and Ollama falls back to the template embedded in the GGUF.
    """
    from transformers import AutoTokenizer

    from psyfactory.io import atomic_write_text

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    layout = None
    try:
        layout = ChatLayout.from_tokenizer(tok, enable_thinking=enable_thinking)
    except GGUFError as e:
        print(f"[gguf] WARNING: {e}", file=sys.stderr)
    if layout is not None and not layout.matches(tok, enable_thinking=enable_thinking):
        print(f"[gguf] WARNING: {tokenizer_dir}: chat template is not a plain per-role layout; the Modelfile "
              "leaves TEMPLATE to the one embedded in the GGUF", file=sys.stderr)
        layout = None
    stops = sorted({t for t in (tok.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
                    if t and t in tok.get_vocab()})
    lines = [f"# Ollama Modelfile written by psyfactory gguf. Usage: ollama create NAME -f {Path(gguf_dir, filename)}",
             f"FROM ./{gguf_name}"]
    if lora_name:
        lines.append(f"ADAPTER ./{lora_name}")
    if layout is not None:
        lines.append(f'TEMPLATE """{layout.ollama_template()}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if label_task:  # label tasks: deterministic, short, no reasoning
        lines += ["PARAMETER temperature 0", "PARAMETER num_predict 128"]
    path = Path(gguf_dir, filename)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- orchestration
def human_size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def export_run(run_dir: str | Path, *, quant: str = DEFAULT_QUANT, local_tokenizer: str | Path | None = None,
               enable_thinking: bool = False, label_task: bool = False, do_verify: bool = True,
               lora: bool = False, base_dir: str | Path | None = None,
               conversations: list[list[dict[str, str]]] | None = None) -> dict[str, Any]:
    """The whole `make gguf` for one run directory; returns (and writes) gguf/export.json."""
    from psyfactory.io import atomic_write_json

    setup_info()
    run_dir = Path(run_dir)
    merged, out = run_dir / "merged", run_dir / "gguf"
    if not (merged / "config.json").is_file():
        raise GGUFError(f"{merged}: merged model not found; run `make merge` for this run first")
    print(f"[gguf] converting {merged} -> f16")
    f16 = convert(merged, out / "model-f16.gguf", local_tokenizer=local_tokenizer)
    files = {"F16": f16}
    quant = quant.upper()
    print(f"[gguf] quantizing -> {quant}")
    files[quant] = quantize(f16, out / f"model-{quant}.gguf", quant)
    report: dict[str, Any] = {"quant": quant, "files": {}, "verification": {}}
    f16_size = f16.stat().st_size
    for name, path in files.items():
        size = path.stat().st_size
        report["files"][name] = {"path": str(path), "bytes": size, "ratio_to_f16": round(size / f16_size, 4)}
    if lora:
        adapter = run_dir / "adapter"
        if base_dir is None:
            raise GGUFError("--lora needs the base model directory")
        print(f"[gguf] converting LoRA adapter {adapter} and its base {base_dir}")
        files["LORA"] = convert_lora(adapter, base_dir, out / "adapter-f16.gguf")
        files["BASE"] = convert(base_dir, out / "base-f16.gguf", local_tokenizer=local_tokenizer)
        report["files"]["LORA"] = {"path": str(files["LORA"]), "bytes": files["LORA"].stat().st_size}
    if do_verify:
        checks = [("F16", f16, None), (quant, files[quant], None)]
        if lora:
            checks.append(("LORA", files["BASE"], files["LORA"]))
        for name, path, adapter_path in checks:
            print(f"[gguf] verifying {path.name}{' + ' + Path(adapter_path).name if adapter_path else ''} vs {merged}")
            v = verify(path, merged, lora=adapter_path, enable_thinking=enable_thinking, conversations=conversations)
            report["verification"][name] = v.summary()
        f16v = report["verification"]["F16"]
        report["f16_ok"] = bool(f16v["tokens_equal"] and f16v["greedy_agreement"] >= F16_MIN_AGREEMENT
                                and f16v["max_rel_logit_error"] <= F16_MAX_REL_LOGIT_ERROR)
    report["modelfile"] = str(write_modelfile(out, files[quant].name, merged, enable_thinking=enable_thinking,
                                              label_task=label_task))
    if lora:  # alternative: ship base + adapter instead of the merged model
        report["modelfile_lora"] = str(write_modelfile(out, files["BASE"].name, merged, enable_thinking=enable_thinking,
                                                       label_task=label_task, lora_name=files["LORA"].name,
                                                       filename="Modelfile.lora"))
    atomic_write_json(out / "export.json", report)
    print_report(report)
    if do_verify and not report["f16_ok"]:
        raise GGUFError(f"f16 GGUF does not match the HF model; see {out / 'export.json'}")
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GGUF export")
    for col in ("file", "size", "x f16", "tokens =", "greedy agree", "max |Δlogit|"):
        table.add_column(col)
    for name, f in report["files"].items():
        v = report["verification"].get(name, {})
        label = Path(f["path"]).name + (" (on base-f16)" if name == "LORA" else "")
        ratio = f"{f['ratio_to_f16']:.3f}" if "ratio_to_f16" in f else "-"
        table.add_row(label, human_size(f["bytes"]), ratio,
                      str(v.get("tokens_equal", "-")),
                      f"{v['greedy_agreement']:.1%}" if v else "-",
                      f"{v['max_logit_error']:.4f}" if v else "-")
    Console(stderr=True, width=120).print(table)
    if "modelfile" in report:
        print(f"[gguf] Ollama Modelfile: {report['modelfile']}", file=sys.stderr)
