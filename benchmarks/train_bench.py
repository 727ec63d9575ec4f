"""Training speed/memory benchmark: LLaMA-Factory's plain settings vs the repo's tuned settings.

Same model, task data and step count for every variant; each variant runs in its own process
(`llamafactory.train.tuner.run_exp` with a measuring callback) and the parent prints them side by
side and writes benchmarks/results/<date>-<device>-<model>-<method>-c<cutoff>.json.

    make bench-train MODEL=qwen3-4b METHOD=lora CUTOFF=4096            # on a GPU node
    python benchmarks/train_bench.py --model tiny --task psydt --hw cpu --steps 8 --cutoff 256

Real architectures (Qwen3-4B, Qwen2-7B, R1-distill-1.5B) are built from their published configs in
benchmarks/archs/ with random weights (speed and memory do not depend on the values) and the tiny
model's tokenizer; `--model tiny` uses the embedded tiny model.

Measured per variant (after --warmup steps): non-padding tokens/s, samples/s, padding share of
processed tokens, tokens per optimizer step, peak GPU memory, MFU against the device's peak bf16
FLOP/s. FLOPs per token = (6N + 12·L·d·s)·(2/3 for LoRA: frozen weights get no weight gradient);
N = parameters, L = layers, d = attention width, s = mean sequence length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from psyfactory.core import paths  # noqa: E402
from psyfactory.core.files import atomic_write_json  # noqa: E402

ARCH_DIR = Path(__file__).parent / "archs"
# Dense bf16 tensor-core peak (no sparsity), from the vendors' datasheets.
PEAK_BF16 = {"A40": 149.7e12, "A100": 312e12, "H100": 989.4e12, "H200": 989.4e12, "L40S": 362e12}

# LLaMA-Factory's plain settings on the same batch shape: padded batches (no packing), gradient
# checkpointing on (its default), attention left to `auto`, no Liger kernel.
PLAIN = {
    "packing": False, "neat_packing": False, "enable_liger_kernel": False, "flash_attn": "auto",
    "disable_gradient_checkpointing": False,
}


def tuned_overrides(cuda: bool) -> dict[str, Any]:
    """The repo's tuned settings on top of the hardware profile: packed batches without
    cross-sample attention, plus fused kernels where the device supports them."""
    out: dict[str, Any] = {"neat_packing": True}
    if cuda:
        import importlib.util

        out["enable_liger_kernel"] = importlib.util.find_spec("liger_kernel") is not None
        out["flash_attn"] = "fa2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return out


def device_info() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        return {"device": name, "cuda": True, "peak_bf16_flops": peak,
                "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    return {"device": f"CPU ({os.cpu_count()} cores)", "cuda": False, "peak_bf16_flops": None}


def build_arch(model: str) -> Path:
    """Random-weight model of a published architecture (cached), with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from psyfactory.tiny import ensure_tiny

    out = paths.cache_dir() / "bench-models" / model
    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    arch = json.loads((ARCH_DIR / f"{model}.json").read_text())
    config = AutoConfig.for_model(**arch)
    tok = AutoTokenizer.from_pretrained(ensure_tiny())
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        net = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    net.save_pretrained(out, max_shard_size="5GB")
    tok.save_pretrained(out)
    return out


class Meter:
    """TrainerCallback + forward pre-hook: counts processed and non-padding tokens and samples."""

    def __init__(self, pad_id: int, warmup: int) -> None:
        self.pad_id, self.warmup = pad_id, warmup
        self.tokens = self.nonpad = self.samples = 0
        self.steps_timed = 0
        self.t_start: float | None = None
        self.seq_lens: list[int] = []

    def hook(self, module, args, kwargs):  # noqa: ANN001
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or self.t_start is None:
            return
        self.tokens += ids.numel()
        real = ids != self.pad_id
        self.nonpad += int(real.sum())
        pos = kwargs.get("position_ids")
        # Packed rows restart position ids at each sample; unpacked rows hold one sample each.
        self.samples += int(((pos == 0) & real).sum()) if pos is not None else int(real.any(dim=1).sum())
        self.seq_lens.append(ids.shape[1])

    def callback(self):  # noqa: ANN201
        import torch
        from transformers import TrainerCallback

        meter = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):  # noqa: ANN001
                model.register_forward_pre_hook(meter.hook, with_kwargs=True)
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == meter.warmup:
                    meter.t_start = time.perf_counter()
                elif state.global_step > meter.warmup:
                    meter.steps_timed += 1

        return _CB()


def run_variant(cfg: dict[str, Any], warmup: int, out_json: Path) -> None:
    """Child process: train `cfg` in-process and dump the measurements."""
    import torch
    from llamafactory.train.tuner import run_exp
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg["model_name_or_path"])
    meter = Meter(tok.pad_token_id, warmup)
    run_exp(cfg, callbacks=[meter.callback()])
    elapsed = time.perf_counter() - meter.t_start if meter.t_start else float("nan")
    mc = AutoConfig.from_pretrained(cfg["model_name_or_path"])
    result = {
        "steps_timed": meter.steps_timed, "seconds": elapsed, "tokens": meter.tokens, "nonpad_tokens": meter.nonpad,
        "samples": meter.samples, "mean_seq_len": sum(meter.seq_lens) / max(len(meter.seq_lens), 1),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "n_layers": mc.num_hidden_layers,
        "attn_width": mc.num_attention_heads * getattr(mc, "head_dim", mc.hidden_size // mc.num_attention_heads),
    }
    atomic_write_json(out_json, result)


def n_params(model_path: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    return sum(p.numel() for p in net.parameters())


def summarize(raw: dict[str, Any], n: int, full_ft: bool, peak: float | None) -> dict[str, Any]:
    sec, steps = raw["seconds"], max(raw["steps_timed"], 1)
    tps = raw["nonpad_tokens"] / sec
    flops_tok = (6 * n + 12 * raw["n_layers"] * raw["attn_width"] * raw["mean_seq_len"]) * (1 if full_ft else 2 / 3)
    return {
        "tokens_per_s": tps,
        "samples_per_s": raw["samples"] / sec,
        "padding_share": 1 - raw["nonpad_tokens"] / max(raw["tokens"], 1),
        "tokens_per_step": raw["nonpad_tokens"] / steps,
        "peak_mem_gb": raw["peak_mem_gb"],
        "mfu": tps * flops_tok / peak if peak else None,
        **raw,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--task", default="psydt")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--hw", default="auto")
    ap.add_argument("--cutoff", type=int, default=None, help="cutoff_len (default: the task's)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="steps excluded from timing")
    ap.add_argument("--variants", default="plain,tuned")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every variant, e.g. gradient_accumulation_steps=1")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/…)")
    ap.add_argument("--child", nargs=2, metavar=("CONFIG_JSON", "OUT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_variant(json.loads(Path(args.child[0]).read_text()), args.warmup, Path(args.child[1]))
        return 0

    from psyfactory.config import compose
    from psyfactory.manifest import package_versions

    dev = device_info()
    overrides = [f"max_steps={args.steps}", "save_steps=100000", "logging_steps=1", "plot_loss=false",
                 "overwrite_output_dir=true", "num_train_epochs=1000"]
    if args.cutoff:
        overrides.append(f"cutoff_len={args.cutoff}")
    overrides += args.overrides
    base = compose(args.model, args.task, args.method, args.hw, overrides)
    if args.model != "tiny" and (ARCH_DIR / f"{args.model}.json").exists():
        base.lf["model_name_or_path"] = str(build_arch(args.model))
    else:
        from psyfactory.models import materialize

        materialize(base.model_ref)
    n = n_params(base.lf["model_name_or_path"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="psy-bench-") as tmp:
        for name in args.variants.split(","):
            extra = PLAIN if name == "plain" else tuned_overrides(dev["cuda"]) if name == "tuned" else {}
            cfg = {**base.lf, **extra, "output_dir": f"{tmp}/{name}"}
            (Path(tmp) / f"{name}.json").write_text(json.dumps(cfg))
            print(f"[bench] {name}: {json.dumps(extra)}", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1" if not dev["cuda"] else "8"))
            cmd = [sys.executable, __file__, "--warmup", str(args.warmup), "--child", f"{tmp}/{name}.json",
                   f"{tmp}/{name}.out.json"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                results[name] = {"error": f"exit {proc.returncode}", "settings": extra}
                continue
            losses = [json.loads(x).get("loss") for x in Path(f"{tmp}/{name}/trainer_log.jsonl").read_text().splitlines()]
            raw = json.loads(Path(f"{tmp}/{name}.out.json").read_text())
            results[name] = {**summarize(raw, n, base.lf.get("finetuning_type") == "full", dev["peak_bf16_flops"]),
                             "settings": extra, "losses": [x for x in losses if x is not None]}

    report = {
        "date": time.strftime("%Y-%m-%d"), **dev, "model": args.model, "params": n, "task": args.task,
        "method": args.method, "cutoff_len": base.lf["cutoff_len"], "steps": args.steps, "warmup": args.warmup,
        "batch": [base.lf.get("per_device_train_batch_size"), base.lf.get("gradient_accumulation_steps")],
        "overrides": args.overrides,
        "versions": package_versions(), "variants": results,
    }
    out = args.out or (Path(__file__).parent / "results" / (
        f"{report['date']}-{'gpu' if dev['cuda'] else 'cpu'}-{args.model}-{args.method}-c{report['cutoff_len']}.json"))
    atomic_write_json(out, report)
    print(format_table(report))
    print(f"[bench] results: {out}")
    return 0 if all("error" not in v for v in results.values()) else 1


def format_table(report: dict[str, Any]) -> str:
    rows = [("variant", "tokens/s", "samples/s", "padding", "tok/step", "peak GB", "MFU")]
    for name, r in report["variants"].items():
        if "error" in r:
            rows.append((name, r["error"], "", "", "", "", ""))
            continue
        rows.append((name, f"{r['tokens_per_s']:.0f}", f"{r['samples_per_s']:.2f}", f"{r['padding_share']:.1%}",
                     f"{r['tokens_per_step']:.0f}", "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.1f}",
                     "-" if r["mfu"] is None else f"{r['mfu']:.1%}"))
    v = report["variants"]
    if all(k in v and "error" not in v[k] for k in ("plain", "tuned")):
        rows.append(("tuned/plain", f"{v['tuned']['tokens_per_s'] / v['plain']['tokens_per_s']:.2f}x",
                     f"{v['tuned']['samples_per_s'] / max(v['plain']['samples_per_s'], 1e-9):.2f}x", "", "", "", ""))
    width = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    head = f"{report['model']} {report['method']} cutoff {report['cutoff_len']} on {report['device']}, {report['steps']} steps"
    return head + "\n" + "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, width, strict=True)) for r in rows)


if __name__ == "__main__":
    sys.exit(main())
