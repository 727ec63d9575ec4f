"""Preflight: config mistakes fail in seconds with one clear line, before any model is loaded."""

from __future__ import annotations

import json

import pytest
from psyutil import cli, one_error_line

from psyfactory.config import compose
from psyfactory.preflight import PreflightError, check_datasets, check_memory, check_template, check_train


def test_unknown_model_task_method_from_cli():
    assert "valid: " in one_error_line(cli("train", "--model", "gpt5", "--task", "psydt", check=False))
    assert "unknown TASK 'x'" in one_error_line(cli("config", "--task", "x", check=False))
    assert "unknown METHOD 'full'" in one_error_line(cli("config", "--method", "full", check=False))


def test_unknown_lf_key_is_named_with_a_suggestion():
    err = one_error_line(cli("config", "--model", "qwen3-4b", "--hw", "a40", "lerning_rate=1e-4", check=False))
    assert "unknown LLaMA-Factory key 'lerning_rate'" in err and "learning_rate" in err


def test_unknown_or_ill_typed_psy_key_is_one_line_naming_the_key():
    err = one_error_line(cli("config", "--hw", "cpu", "psy.generation.max_new_tokenz=5", check=False))
    assert "unknown key 'psy.generation.max_new_tokenz' (did you mean 'psy.generation.max_new_tokens'?)" in err
    err = one_error_line(cli("config", "--hw", "cpu", "psy.generation.max_new_tokens=abc", check=False))
    assert "psy.generation.max_new_tokens: Input should be a valid integer" in err and "'abc'" in err
    err = one_error_line(cli("config", "--hw", "cpu", "psy.generation.thinking=maybe", check=False))
    assert "psy.generation.thinking" in err
    # the key that once had no effect is gone: one line, with the key that does it now
    err = one_error_line(cli("config", "--hw", "cpu", "psy.max_new_tokens=50", check=False))
    assert "unknown key 'psy.max_new_tokens' (did you mean 'psy.generation.max_new_tokens'?)" in err
    err = one_error_line(cli("config", "--hw", "cpu", "psy.reasoning=sometimes", check=False))
    assert "psy.reasoning: Input should be 'none', 'hybrid' or 'always'" in err


def test_plugin_options_are_checked_in_preflight():
    err = one_error_line(cli("config", "--task", "psychcounsel", "--hw", "cpu",
                             "psy.eval_options.psychcounsel_bench.scorring=generate", check=False))
    assert "psy.eval_options.psychcounsel_bench.scorring" in err and "did you mean" in err and "scoring" in err
    err = one_error_line(cli("config", "--task", "psychcounsel", "--hw", "cpu",
                             "psy.eval_options.psychcounsel_bench.scoring=logprob", check=False))
    assert "psy.eval_options.psychcounsel_bench.scoring: Input should be 'loglik' or 'generate'" in err
    err = one_error_line(cli("config", "--task", "psydt", "--hw", "cpu", "psy.eval_plugins=[generaton]", check=False))
    assert "unknown eval plugin 'generaton' (did you mean 'generation'?)" in err


def test_template_not_in_registry():
    with pytest.raises(PreflightError, match="template 'qwen2' is not in LLaMA-Factory's registry.*qwen"):
        check_template({"template": "qwen2"}, "configs/models/x.yaml")


def test_weights_that_cannot_fit_one_gpu_are_refused_before_submission():
    check_memory(compose("qwen2-7b-instruct", "es", "lora", "a40"))  # 15 GB on a 48 GB A40: fine
    big = compose("qwen2-7b-instruct", "es", "lora", "a40", ["psy.params_b=32"])
    with pytest.raises(PreflightError, match=r"needs ~64 GB for its weights alone.*48 GB.*METHOD=qlora.*DS=z3"):
        check_memory(big)
    check_memory(compose("qwen2-7b-instruct", "es", "qlora", "a40", ["psy.params_b=32"]))  # 4-bit: ~18 GB
    check_memory(compose("qwen2-7b-instruct", "es", "lora", "a40", ["psy.params_b=32", "deepspeed=ds.json"]))
    check_memory(compose("qwen2-7b-instruct", "es", "lora", "cpu", ["psy.params_b=32"]))  # no GPU profile


def test_dataset_not_registered_and_missing_file(workspace):
    ds = workspace / "dataset"
    with pytest.raises(PreflightError, match="dataset 'nope_train' is not registered"):
        check_datasets("nope_train", ds)
    with pytest.raises(PreflightError, match=r"data file .*data/student/train.jsonl is missing"):
        check_datasets("student_train", ds)
    assert check_datasets("psydt_train", ds) == [ds / "data" / "psydt" / "train.jsonl"]
    (ds / "dataset_info.json").write_text('{"a": 1,\n oops}')
    with pytest.raises(PreflightError, match=r"dataset_info.json:2: invalid JSON"):
        check_datasets("psydt_train", ds)


@pytest.mark.parametrize(("edit", "says"), [
    ({"file_name": "/etc/passwd"}, "points outside the dataset folder"),
    ({"file_name": "../../outside.jsonl"}, "points outside the dataset folder"),
    ({"file_name": None}, "no file_name"),
    ({"formatting": "chatml"}, "formatting 'chatml'; LLaMA-Factory reads alpaca, sharegpt, openai"),
    ({"columns": {"conversation": "messages"}}, "columns has unknown name(s) conversation"),
    ({"columns": {"messages": "turns"}}, "line 1 has no field 'turns'"),
    ({"tags": {"role_tag": 1}}, "tags must map names to column names"),
])
def test_a_hand_edited_dataset_entry_is_one_line_before_any_model_loads(workspace, edit, says):
    """What LLaMA-Factory or the evaluation would fail on (or read) after the model loaded (issue 22)."""
    import json

    ds = workspace / "dataset"
    info = json.loads((ds / "dataset_info.json").read_text())
    for name in ("psydt_train", "psydt_eval"):
        info[name] = {k: v for k, v in {**info[name], **edit}.items() if v is not None}
    (ds / "dataset_info.json").write_text(json.dumps(info))
    err = one_error_line(cli("train", "--model", "tiny", "--task", "psydt", "--hw", "cpu", "--dry-run", check=False))
    assert says in err and "psydt_train" in err
    err = one_error_line(cli("eval", "--model", "tiny", "--task", "psydt", "--hw", "cpu", "--base", check=False))
    assert says in err and "psydt_eval" in err


def test_train_refuses_missing_data_before_loading_anything(workspace):
    err = one_error_line(cli("train", "--model", "qwen3-4b", "--task", "student", "--hw", "cpu", check=False))
    assert "student/train.jsonl is missing" in err
    err = one_error_line(cli("train", "--task", "psychcounsel", "--hw", "cpu", check=False))
    assert "eval-only" in err


def test_qlora_merge_onto_quantized_base_is_refused(workspace):
    err = one_error_line(cli("merge", "--model", "tiny", "--method", "qlora", "--hw", "cpu", "quantization_bit=4",
                             check=False))
    assert "cannot merge a LoRA adapter into a quantized base" in err


def test_merge_without_adapter_says_train_first(workspace):
    err = one_error_line(cli("merge", "--model", "tiny", "--hw", "cpu", check=False))
    assert "no trained adapter" in err and "make train" in err


def test_bad_run_names_are_refused(workspace):
    for bad in ("../x", "a/eval/b", ".hidden", "a b"):
        assert "a run name is" in one_error_line(cli("config", "--run", bad, "--hw", "cpu", check=False))


def test_check_train_on_composed_config(workspace):
    c = compose("tiny", "psydt", "lora", "cpu")
    files = check_train(c.lf, "x")
    assert files and json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])["messages"]
