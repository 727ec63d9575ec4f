"""`make gguf` for one run: merged/ -> f16 -> quantized, verified, Modelfile, gguf/export.json."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from psyfactory.core.errors import GGUFError
from psyfactory.gguf.common import DEFAULT_QUANT, setup_info
from psyfactory.gguf.convert import convert, convert_lora, quantize
from psyfactory.gguf.modelfile import write_modelfile
from psyfactory.gguf.verify import F16_MAX_REL_LOGIT_ERROR, F16_MIN_AGREEMENT, verify


def human_size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def export_run(run_dir: str | Path, *, quant: str = DEFAULT_QUANT, local_tokenizer: str | Path | None = None,
               enable_thinking: bool = False, label_task: bool = False, do_verify: bool = True,
               lora: bool = False, base_dir: str | Path | None = None,
               conversations: list[list[dict[str, str]]] | None = None) -> dict[str, Any]:
    """The whole `make gguf` for one run directory; returns (and writes) gguf/export.json."""
    from psyfactory.core.files import atomic_write_json

    setup_info()
    run_dir = Path(run_dir)
    merged, out = run_dir / "merged", run_dir / "gguf"
    if not (merged / "config.json").is_file():
        raise GGUFError(f"{merged}: merged model not found; run `make merge` for this run first")
    quant = quant.upper()
    try:
        print(f"[gguf] converting {merged} -> f16")
        f16 = convert(merged, out / "model-f16.gguf", local_tokenizer=local_tokenizer)
        files = {"F16": f16}
        print(f"[gguf] quantizing -> {quant}")
        files[quant] = quantize(f16, out / f"model-{quant}.gguf", quant)
    except GGUFError as e:  # export.json describes the last attempt, failed ones included
        atomic_write_json(out / "export.json", {"quant": quant, "error": str(e), "files": {}, "verification": {}})
        raise
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
            try:
                v = verify(path, merged, lora=adapter_path, enable_thinking=enable_thinking,
                           conversations=conversations, log=out / "logs" / f"verify-{name}.log")
            except GGUFError as e:  # a llama.cpp abort: the export.json says so before the error line
                report["verification"][name] = {"gguf": str(path), "error": str(e)}
                report["verification_failed"] = name
                atomic_write_json(out / "export.json", report)
                raise GGUFError(f"{e}; recorded in {out / 'export.json'}") from None
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


def export_for_run(run: Any, *, quant: str = DEFAULT_QUANT, lora: bool = False, do_verify: bool = True) -> dict[str, Any]:
    """`make gguf` for a resolved run (psyfactory.runspec.Run): its chat-template switch, label kind and,
    for the tiny model, its local tokenizer (the only one allowed an unknown llama.cpp pre-tokenizer)."""
    c = run.config
    if c.psy.trainer == "seqcls":
        raise GGUFError(f"run {run.name} is a classifier (METHOD={run.method}): llama.cpp runs causal language "
                        "models; use its adapter (inference_example.py) or the merged classifier (make merge)")
    local = None
    if c.model_ref.startswith("builtin:tiny"):
        from psyfactory.tiny import ensure_tiny

        local = ensure_tiny()
    with run.lock():
        source = check_exportable(run)
        report = export_run(run.dir, quant=quant, local_tokenizer=local, do_verify=do_verify, lora=lora,
                            base_dir=c.lf["model_name_or_path"] if lora else None,
                            enable_thinking=bool(c.lf.get("enable_thinking", False)), label_task=c.psy.kind == "label")
        from psyfactory.core.files import atomic_write_json

        report["adapter_sha256"] = source  # what the exported weights were merged from
        atomic_write_json(run.gguf_dir / "export.json", report)
        return report


def check_exportable(run: Any) -> str | None:
    """Before the GGUF stack is built or loaded: the run has a merged model to export, and it is the merge
    of the run's current adapter (stage lineage). Returns that adapter's sha256."""
    from psyfactory.manifest import adapter_sha256, merged_from

    if not (run.merged_dir / "config.json").is_file():
        raise GGUFError(f"{run.merged_dir}: merged model not found; run `make merge RUN={run.name}` first")
    current, merged = adapter_sha256(run.adapter_dir), merged_from(run.dir)
    if merged is not None and current is not None and merged != current:
        raise GGUFError(f"{run.merged_dir} was merged from another adapter (sha256 {merged[:12]}…) than the run's "
                        f"current one ({current[:12]}…: retrained since); run `make merge RUN={run.name}` again first")
    return current
