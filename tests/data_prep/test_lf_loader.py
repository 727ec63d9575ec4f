"""LLaMA-Factory's own loader (template + converter + tokenizer) reads every registered dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _lf_load(dataset_dir: Path, names: list[str]) -> dict[str, int]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from psyfactory.tiny import ensure_tiny

    tiny = str(ensure_tiny())
    out = {}
    for name in names:
        args = dict(stage="sft", do_train=True, model_name_or_path=tiny, dataset=name, dataset_dir=str(dataset_dir),
                    template="qwen3_nothink", cutoff_len=4096, output_dir=str(dataset_dir / "_lf_out"),
                    overwrite_cache=True, preprocessing_num_workers=1, finetuning_type="lora", report_to="none")
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tm = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
        ds = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)["train_dataset"]
        out[name] = len(ds)
        # every example keeps a supervised target (LF drops invalid examples silently otherwise)
        assert all(any(x != -100 for x in ex["labels"]) for ex in ds), name
    return out


def _lines(dataset_dir: Path, entry: dict) -> int:
    return len((dataset_dir / entry["file_name"]).read_text(encoding="utf-8").splitlines())


def test_lf_loads_every_sample_dataset(sample_prep):
    out, _ = sample_prep
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    loaded = _lf_load(out, list(info))
    assert loaded == {name: _lines(out, e) for name, e in info.items()}


@pytest.mark.slow
def test_lf_loads_every_real_sample_dataset(shared_prep):
    out, _ = shared_prep
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    loaded = _lf_load(out, list(info))
    assert loaded == {name: _lines(out, e) for name, e in info.items()}
