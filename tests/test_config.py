"""Config composition: layering, overrides, registry completeness, LF validity of every combination."""

from __future__ import annotations

import itertools

import pytest
import yaml
from psyutil import cli

from psyfactory.config import ConfigError, compose
from psyfactory.core import paths
from psyfactory.layers import list_names, load_layer
from psyfactory.models import resolve_model_path
from psyfactory.preflight import check_keys, check_template, lf_keys
from psyfactory.taskview import TaskView

REQUIRED_MODELS = {
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen2-7b-instruct", "qwen2.5-7b-instruct",
    "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b", "llama3.1-8b-instruct",
    "mistral-7b-instruct-v0.3", "gemma-2-9b-it", "tiny",
}


def test_registry_has_required_models_and_tasks():
    assert set(list_names("model")) >= REQUIRED_MODELS
    assert {"psydt", "cpsycoun", "psyqa", "es", "emotion", "student"} <= set(list_names("task"))
    assert {"lora", "qlora", "lora-cls"} == set(list_names("method"))


def _keys(path) -> set[str]:
    data = load_layer(path)
    psy_keys = {f"psy.{k}" for k in (data.pop("psy", None) or {})}
    return set(data) | psy_keys


def test_no_key_repeated_across_layers():
    kinds = {"base": [paths.CONFIG_DIR / "base.yaml"]}
    for kind, folder in (("hardware", "hardware"), ("method", "methods"), ("model", "models"), ("task", "tasks")):
        kinds[kind] = sorted((paths.CONFIG_DIR / folder).glob("*.yaml"))
    owned = {kind: set().union(*(_keys(p) for p in files)) for kind, files in kinds.items()}
    for a, b in itertools.combinations(owned, 2):
        assert not owned[a] & owned[b], f"keys set in both {a} and {b} layers: {owned[a] & owned[b]}"


@pytest.mark.parametrize("model", sorted(REQUIRED_MODELS))
def test_every_model_task_method_composes_to_valid_lf_keys(model):
    for task, method in itertools.product(list_names("task"), list_names("method")):
        c = compose(model, task, method, "a40")
        check_keys(c.lf, "train", f"{model}/{task}/{method}")
        check_template(c.lf, f"{model}/{task}/{method}")
        if c.psy.eval_only:  # benchmark tasks (psychcounsel): nothing to train on
            assert "dataset" not in c.lf and c.psy.eval_plugins
            continue
        assert c.lf["dataset"] == f"{task}_train"
        assert TaskView(c).eval_dataset == f"{task}_eval"  # the one default of the eval split's name
        assert "psy" not in c.lf


def test_layer_precedence_and_overrides():
    c = compose("qwen3-4b", "emotion", "qlora", "a40", ["learning_rate=5e-5", "psy.generation.max_new_tokens=3"])
    assert c.lf["quantization_bit"] == 4  # method layer
    assert c.lf["bf16"] is True  # hardware layer
    assert c.lf["cutoff_len"] == 256  # task layer
    assert c.lf["learning_rate"] == 5e-5  # override beats task
    assert c.psy.generation.max_new_tokens == 3
    assert c.lf["output_dir"] == str(paths.runs_root() / "qwen3-4b" / "emotion" / "qlora" / "adapter")
    named = compose("qwen3-4b", "emotion", "qlora", "a40", run="lr-5e-5")
    assert named.lf["output_dir"] == str(paths.runs_root() / "lr-5e-5" / "adapter") and named.run_dir.name == "lr-5e-5"
    assert compose("qwen3-4b", "emotion", "lora", "cpu").lf["bf16"] is False
    assert "quantization_bit" not in compose("qwen3-4b", "emotion", "lora", "cpu").lf


def test_thinking_is_disabled_only_for_reasoning_models():
    assert compose("qwen3-4b", "student", "lora", "a40").lf["enable_thinking"] is False
    assert compose("deepseek-r1-distill-qwen-7b", "student", "lora", "a40").lf["enable_thinking"] is False
    assert "enable_thinking" not in compose("qwen2.5-7b-instruct", "student", "lora", "a40").lf
    assert compose("qwen3-4b", "psydt", "lora", "a40", ["psy.generation.thinking=true"]).lf["enable_thinking"] is True
    # `template`: the chat template's own default (Qwen3 thinks); LF's switch is then on as well
    assert compose("qwen3-4b", "psydt", "lora", "a40", ["psy.generation.thinking=template"]).lf["enable_thinking"] is True


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown MODEL 'qwen9'; valid: .*qwen3-4b"):
        compose("qwen9", "psydt")
    with pytest.raises(ConfigError, match=r"unknown TASK 'nope'; valid: .*student"):
        compose("tiny", "nope")
    with pytest.raises(ConfigError, match=r"unknown METHOD 'dora'"):
        compose("tiny", "psydt", "dora")
    with pytest.raises(ConfigError, match="key=value"):
        compose("tiny", "psydt", "lora", "cpu", ["learning_rate"])


def test_model_path_resolution(tmp_path, monkeypatch):
    assert resolve_model_path("qwen3-4b", "Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"
    store = tmp_path / "store"
    (store / "Qwen" / "Qwen3-4B").mkdir(parents=True)
    (store / "Qwen" / "Qwen3-4B" / "config.json").write_text("{}")
    monkeypatch.setenv("PSY_MODEL_DIR", str(store))
    assert resolve_model_path("qwen3-4b", "Qwen/Qwen3-4B") == str(store / "Qwen" / "Qwen3-4B")
    mapping = tmp_path / "models.yaml"
    mapping.write_text("qwen3-4b: /nfs/models/qwen3-4b\n")
    monkeypatch.setenv("PSY_MODEL_PATHS", str(mapping))
    assert compose("qwen3-4b", "psydt", "lora", "a40").lf["model_name_or_path"] == "/nfs/models/qwen3-4b"
    assert compose("qwen3-4b", "psydt", "lora", "a40").model_ref == "Qwen/Qwen3-4B"


def test_adding_a_model_is_one_yaml_file(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    import shutil

    shutil.copytree(paths.CONFIG_DIR, configs)
    (configs / "models" / "my-qwen.yaml").write_text(
        "model_name_or_path: /models/my-qwen\ntemplate: qwen\npsy:\n  reasoning: none\n"
    )
    monkeypatch.setattr(paths, "CONFIG_DIR", configs)
    assert "my-qwen" in list_names("model")
    c = compose("my-qwen", "student", "qlora", "a40")
    check_keys(c.lf, "train", "my-qwen")
    assert c.lf["template"] == "qwen" and c.lf["quantization_bit"] == 4


@pytest.mark.parametrize("task", ["psydt", "student", "es"])
def test_cli_config_prints_flat_config_lf_parses(task):
    from llamafactory.hparams.parser import _parse_train_args

    out = cli("config", "--model", "qwen3-4b", "--task", task, "--method", "qlora", "--hw", "a40").stdout
    assert out.startswith("# Composed by psyfactory")
    cfg = yaml.safe_load(out)
    assert cfg["model_name_or_path"] == "Qwen/Qwen3-4B" and cfg["quantization_bit"] == 4
    # LLaMA-Factory's own parser accepts it (use_cpu only because this test machine has no GPU).
    model_args, data_args, training_args, finetuning_args, _ = _parse_train_args({**cfg, "use_cpu": True})
    assert model_args.quantization_bit == 4
    assert data_args.dataset == [f"{task}_train"]
    assert finetuning_args.finetuning_type == "lora"
    assert training_args.bf16 is True


def test_lf_key_sets_are_real():
    assert {"lora_rank", "cutoff_len", "quantization_bit", "enable_thinking"} <= lf_keys("train")
    assert "export_dir" in lf_keys("infer") and "num_train_epochs" not in lf_keys("infer")


def test_every_task_lists_registered_eval_plugins():
    from psyfactory import plugins

    for task in list_names("task"):
        names = compose("tiny", task, "lora", "cpu").psy.eval_plugins
        assert names, f"configs/tasks/{task}.yaml lists no eval plugins"
        assert set(names) <= set(plugins.names()), f"{task}: unknown plugins {set(names) - set(plugins.names())}"


def test_every_psy_key_is_documented():
    from psyfactory.psyconfig import PsyConfig, describe

    doc = (paths.REPO_ROOT / "docs" / "configs.md").read_text(encoding="utf-8")
    for key, layer, _, default, help_ in describe():
        assert f"| `psy.{key}` | {layer} | `{default}` |" in doc, f"docs/configs.md: psy.{key} missing or out of date"
        assert help_, key
    assert set(PsyConfig.keys()) == {r[0] for r in describe()}


def test_params_b_is_read():
    assert compose("qwen3-4b", "psydt", "lora", "a40").psy.params_b == 4.0
    assert compose("qwen3-4b", "psydt", "lora", "a40").psy.gpu_memory_gb == 48
