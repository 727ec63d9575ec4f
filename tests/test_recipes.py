"""Recipes (configs/recipes/): each composes and passes LLaMA-Factory's parser, sets only departures from
the layers, matches its seed's values (docs/recipes.md is generated and checked here); the layer options
the seeds need are checked in preflight; a run trained with a foreign template is evaluated in it; and
`make reproduce RECIPE=tiny-student` runs the whole chain on CPU (slow)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from psyutil import cli, one_error_line

from psyfactory import preflight
from psyfactory.config import compose
from psyfactory.core import paths
from psyfactory.recipes import list_recipes, load_recipe
from psyfactory.seedtable import load_seed, markdown, same, setting_rows, show

SEED_RECIPES = ["seed000-es", "seed002-student", "seed003-emotion", "seed004-psydt"]
ALTERNATIVES = {"seed003-emotion-labelword": "seed003-emotion", "seed004-psydt-turns": "seed004-psydt"}
SEEDS_DIR = paths.REPO_ROOT.parent / "shared" / "seeds"


def test_one_recipe_per_seed_their_named_alternatives_and_the_cpu_rehearsal():
    assert set(list_recipes()) == {*SEED_RECIPES, *ALTERNATIVES, "tiny-student"}
    got = {n: (r.spec.model, r.spec.task, r.spec.method) for n in SEED_RECIPES for r in [load_recipe(n)]}
    assert got == {"seed000-es": ("qwen2-7b-instruct", "es", "qlora"),
                   "seed002-student": ("deepseek-r1-distill-qwen-1.5b", "student", "qlora"),
                   "seed003-emotion": ("qwen3-0.6b", "emotion", "lora-cls"),
                   "seed004-psydt": ("qwen3-4b", "psydt", "lora")}
    assert load_recipe("seed004-psydt").spec.eval_tasks == ["psydt", "seed004-exact", "psychcounsel"]
    assert load_recipe("seed002-student").spec.gguf == "Q4_K_M"
    for name, seed in ALTERNATIVES.items():  # each says what it changes and why; the tables show it
        spec = load_recipe(name).spec
        assert spec.alternative_of == seed and spec.why and load_seed(name) is None
        assert f"A named alternative to [`{seed}`](#{seed})" in markdown(names=[name])
    for name in SEED_RECIPES:  # the seeds trained on the raw text: each recipe prepares its own unscrubbed data
        data = load_recipe(name).spec.data
        assert data is not None and data.scrub is False


@pytest.mark.parametrize("name", sorted({*SEED_RECIPES, *ALTERNATIVES, "tiny-student"}))
def test_recipe_composes_passes_lf_parser_and_sets_only_departures(name):
    r = load_recipe(name)
    assert f"make reproduce RECIPE={name}" in r.header  # torchtune-style: the header gives the command
    if r.spec.seed:
        assert f"# Seed: {r.spec.seed}" in r.header and f"configs/recipes/seeds/{name}.yaml" in r.header
        if SEEDS_DIR.is_dir():
            assert (SEEDS_DIR / r.spec.seed).is_file()
    for hw in ("a40", "cpu"):
        c = compose(r.spec.model, r.spec.task, r.spec.method, hw, recipe=name)
        assert c.run == name and c.lf["output_dir"].endswith(f"{name}/adapter")
        preflight.check_keys(c.lf, "train", name)
        preflight.check_template(c.lf, name)
        eff = preflight.lf_effective(dict(c.lf), name)  # LLaMA-Factory's own parser (HfArgumentParser + post_init)
        for key, value in r.layer.items():
            if key != "psy":
                assert same(eff[key], value), (name, hw, key, eff[key], value)
    # every key departs from what the layers give on the seeds' hardware: a recipe holds no restatements
    plain = compose(r.spec.model, r.spec.task, r.spec.method, "a40")
    for key, value in r.layer.items():
        if key == "psy":
            for k, v in value.items():
                assert getattr(plain.psy, k) != v, f"{name}: psy.{k}={v} is already the layers' value"
        else:
            assert not same(plain.lf.get(key), value), f"{name}: {key}={value} is already the layers' value"


def test_make_config_and_train_accept_a_recipe(workspace):
    res = subprocess.run(["make", "-s", "config", "RECIPE=seed004-psydt", "HW=a40"], cwd=paths.REPO_ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert (cfg["lora_rank"], cfg["cutoff_len"], cfg["fp16"], cfg["eval_steps"]) == (8, 384, True, 200)
    assert "# Recreate: make config RECIPE=seed004-psydt HW=a40" in res.stdout
    assert "warning: fp16 on a40, which trains in bf16" in res.stderr  # the seed's fp16, said once
    out = cli("train", "--recipe", "seed004-psydt", "--hw", "cpu", "--dry-run", "max_steps=1").stdout
    assert str(workspace / "runs" / "seed004-psydt" / "train.yaml") in out
    assert "fp16" not in cli("config", "--recipe", "seed003-emotion", "--hw", "a40").stderr


def test_recipe_mistakes_are_one_error_line(tmp_path, monkeypatch):
    err = one_error_line(cli("config", "--recipe", "seed04-psydt", check=False))
    assert "unknown RECIPE 'seed04-psydt'; valid: seed000-es, seed002-student" in err
    assert "(did you mean 'seed004-psydt'?)" in err
    err = one_error_line(cli("config", "--recipe", "seed004-psydt", "--model", "qwen3-8b", check=False))
    assert "give the run a name of its own: RUN=<name>" in err
    c = compose("qwen3-8b", "psydt", "lora", "a40", run="s4-8b", recipe="seed004-psydt")  # with a RUN it is fine
    assert c.lf["lora_rank"] == 8 and c.model == "qwen3-8b"
    err = one_error_line(cli("reproduce", check=False))
    assert "reproduce needs RECIPE=<name>; valid: seed000-es" in err
    # a key written twice in one file is refused (YAML alone would keep the last silently)
    configs = tmp_path / "configs"
    shutil.copytree(paths.CONFIG_DIR, configs)
    monkeypatch.setattr(paths, "CONFIG_DIR", configs)
    text = (configs / "recipes" / "seed004-psydt.yaml").read_text()
    (configs / "recipes" / "seed004-psydt.yaml").write_text(text + "lora_rank: 16\n")
    err = one_error_line(cli("config", "--recipe", "seed004-psydt", check=False))
    line = 1 + text.splitlines().index("lora_rank: 8")
    assert "seed004-psydt.yaml: invalid YAML" in err and f"key 'lora_rank' is set twice (first on line {line})" in err
    (configs / "recipes" / "bad.yaml").write_text("recipe: {model: qwen3-4b, task: psydt, methd: lora}\n")
    assert "unknown key 'recipe.methd' (did you mean 'recipe.method'?)" in one_error_line(
        cli("config", "--recipe", "bad", check=False))
    (configs / "recipes" / "bad.yaml").write_text("recipe: {model: qwen3-4b, task: psydt}\noutput_dir: /tmp/x\n")
    assert "does not set output_dir" in one_error_line(cli("config", "--recipe", "bad", check=False))
    (configs / "recipes" / "bad.yaml").write_text("recipe: {model: qwen3-4b, task: psydtt}\n")
    assert "unknown TASK 'psydtt'" in one_error_line(cli("config", "--recipe", "bad", check=False))


def test_layer_options_the_seeds_need_are_checked_in_preflight():
    def err(*args: str) -> str:
        return one_error_line(cli("config", "--model", "qwen3-4b", "--task", "psydt", "--hw", "a40", *args,
                                  check=False))

    assert "max_samples=0 loads no samples" in err("max_samples=0")  # seed 002 hit it
    assert "no eval data: set val_size" in err("eval_strategy=steps")
    e = err("--lf-check", "val_size=0.05", "eval_strategy=no", "load_best_model_at_end=true")
    assert "LLaMA-Factory rejects the config" in e and "load_best_model_at_end" in e
    if not __import__("importlib").util.find_spec("wandb"):
        assert "report_to=wandb needs the wandb package" in err("report_to=wandb")
    cli("config", "--model", "qwen3-4b", "--task", "psydt", "--hw", "a40", "report_to=tensorboard", "val_size=0.05",
        "eval_strategy=steps", "eval_steps=50", "save_steps=100", "load_best_model_at_end=true", "warmup_steps=100",
        "weight_decay=0.01", "upcast_layernorm=true", "upcast_lmhead_output=true")


def test_foreign_template_is_used_for_evaluation(tiny_model):
    """A run trained with LF's `qwen` template on a model whose own is another (seed 002) is evaluated with
    LLaMA-Factory's rendering of `qwen`: ChatML with Qwen's default system prompt."""
    from psyfactory.inference import HFBackend

    assert compose("deepseek-r1-distill-qwen-1.5b", "student", "qlora", "a40", recipe="seed002-student").foreign_template
    assert not compose("qwen3-4b", "psydt", "lora", "a40", recipe="seed004-psydt").foreign_template
    assert not compose("deepseek-r1-distill-qwen-1.5b", "student", "qlora", "a40").foreign_template
    conv = [{"role": "user", "content": "你好"}]
    own = HFBackend(tiny_model, batch_size=1, progress=False, reasoning="hybrid").render(conv)
    qwen = HFBackend(tiny_model, batch_size=1, progress=False, reasoning="hybrid", lf_template="qwen").render(conv)
    assert own != qwen
    assert qwen == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")


# Qwen2-7B-Instruct's own chat template (its tokenizer_config.json), written out by hand: evaluation renders
# prompts with it; its system prompt when a conversation has none is "You are a helpful assistant."
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
ROW = [{"role": "user", "content": "阅读案例描述和咨询过程……"}, {"role": "assistant", "content": "经验与反思……"}]


def _trained_prompt(c, tok, monkeypatch) -> str:
    """The prompt LLaMA-Factory trains on for a row with `system: ""` (as es / student rows have), rendered by
    LF's template with the composed config's default_system."""
    import copy

    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import DataArguments

    monkeypatch.setitem(TEMPLATES, c.lf["template"], copy.deepcopy(TEMPLATES[c.lf["template"]]))  # LF edits it
    template = get_template_and_fix_tokenizer(tok, DataArguments(template=c.lf["template"],
                                                                 default_system=c.lf.get("default_system")))
    prompt, _ = template.encode_oneturn(tok, ROW, system="")
    return tok.decode(prompt)


def test_seed000_trains_and_evaluates_with_the_same_system_prompt(tiny_model, monkeypatch):
    """Qwen2-7B-Instruct: LF's `qwen` would train with Qwen's default system prompt while evaluation renders the
    model's own template; the model layer's default_system makes both the model's."""
    from transformers import AutoTokenizer

    from psyfactory.inference import HFBackend

    c = compose("qwen2-7b-instruct", "es", "qlora", "a40", recipe="seed000-es")
    assert not c.foreign_template
    trained = _trained_prompt(c, AutoTokenizer.from_pretrained(tiny_model), monkeypatch)
    backend = HFBackend(tiny_model, batch_size=1, progress=False)
    backend.tokenizer.chat_template = QWEN2_CHAT_TEMPLATE  # what evaluation of the real model renders with
    evaluated = backend.render(ROW[:1])
    assert trained == evaluated == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                    "<|im_start|>user\n阅读案例描述和咨询过程……<|im_end|>\n<|im_start|>assistant\n")


def test_seed002_trains_and_evaluates_with_the_same_system_prompt(tiny_model, monkeypatch):
    """The R1 distill trained with LF's `qwen` (a foreign template) is evaluated with LF's own rendering of it: the
    same default system prompt both ways."""
    from transformers import AutoTokenizer

    from psyfactory.inference import HFBackend

    c = compose("deepseek-r1-distill-qwen-1.5b", "student", "qlora", "a40", recipe="seed002-student")
    assert c.foreign_template and c.inference_template == "qwen"
    trained = _trained_prompt(c, AutoTokenizer.from_pretrained(tiny_model), monkeypatch)
    evaluated = HFBackend(tiny_model, batch_size=1, progress=False, reasoning="always", lf_template=c.inference_template,
                          default_system=c.lf.get("default_system")).render(ROW[:1])
    assert trained == evaluated
    assert trained.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.")


def test_pre_rendered_text_is_evaluated_with_the_models_template():
    """seed004-psydt trains on ChatML text through LF's `empty` template; everything after training (eval, merge,
    predict, chat) renders with the model's own template, whose format the text is in."""
    from psyfactory.runner import chat_config, merge_config, predict_config
    from psyfactory.runspec import resolve

    c = compose("qwen3-4b", "psydt", "lora", "a40", recipe="seed004-psydt")
    assert (c.lf["template"], c.inference_template, c.foreign_template) == ("empty", "qwen3", False)
    run = resolve(recipe="seed004-psydt", hw="a40")
    assert merge_config(run)["template"] == predict_config(run)["template"] == chat_config(run)["template"] == "qwen3"


# ---------------------------------------------------------------------------- side-by-side tables


def test_docs_recipes_md_is_the_generated_table():
    doc = (paths.REPO_ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert doc == markdown(), "docs/recipes.md is out of date: run `make recipe-table`"


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_table_rows_match_the_seed_values_and_the_composed_config(name):
    """Each row: the seed's value as the seed file states it, the recipe's value as LLaMA-Factory parses
    the composed config; equal, or the seed file says why not. The same rows are in docs/recipes.md."""
    facts = load_seed(name)
    r = load_recipe(name)
    c = compose(r.spec.model, r.spec.task, r.spec.method, "a40", recipe=name)
    eff = preflight.lf_effective(dict(c.lf), name)
    rows = setting_rows(name)
    assert [row.setting for row in rows] == facts.settings
    doc = (paths.REPO_ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    section = doc.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    for row in rows:
        s = row.setting
        assert row.ok, f"{name}: '{s.setting}' differs from the seed ({show(s.seed)}) without a reason"
        cells = row.cells()
        assert cells[1].startswith(show(s.seed))
        if s.key and s.key != "model_name_or_path" and not s.key.startswith(("psy.", "recipe.")) and s.task is None:
            assert same(row.value, eff[s.key])
            assert f"`{s.key}: {show(eff[s.key])}`" in cells[2]
            assert row.status == ("not stated" if s.seed is None else "same" if same(eff[s.key], s.wanted)
                                  else "not followed")
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {s.setting} | "))
        assert cells[2] in line and "DIFFERS" not in line
    if SEEDS_DIR.is_dir():  # numbers are the seed's own, text for text
        text = (SEEDS_DIR / facts.source).read_text(encoding="utf-8")
        for s in facts.settings:
            if isinstance(s.seed, int | float) and not isinstance(s.seed, bool):
                assert re.search(rf"(?<![\d.]){re.escape(str(s.seed))}(?![\d])", text), (name, s.setting, s.seed)
        for res in facts.results:
            for number in re.findall(r"\d\d:\d\d:\d\d|\d+(?:,\d{3})*(?:\.\d+)?%?", res.seed):
                assert number in text, (name, res.result, number)


def test_a_recipe_that_drifts_from_its_seed_is_caught(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(paths.CONFIG_DIR, configs)
    monkeypatch.setattr(paths, "CONFIG_DIR", configs)
    path = configs / "recipes" / "seed004-psydt.yaml"
    path.write_text(path.read_text().replace("lora_rank: 8", "lora_rank: 16"))
    rows = {row.setting.setting: row for row in setting_rows("seed004-psydt")}
    assert rows["r"].status == "DIFFERS" and rows["r"].value == 16
    assert "✗ DIFFERS" in markdown(names=["seed004-psydt"])
    res = cli("recipes", "--check", check=False)
    assert res.returncode == 1 and "seed004-psydt: 'r' differs from the seed" in res.stderr


def test_results_are_read_from_the_run(tmp_path):
    """The report's 'this run' column reads the files the run wrote (the slow test below does it for real): the
    author's protocol and the project's beside the seed's figure."""
    from psyfactory.seedtable import measured, recipe_section

    run = tmp_path / "seed004-psydt"
    for variant, fmt, fig in (("seed004-exact-base", "seed004-exact-professional", {"accuracy": 0.75, "correct": 375, "n": 500}),
                              ("psychcounsel-base", "seed004-professional", {"accuracy": 124 / 498, "correct": 124, "n": 498})):
        (run / "eval" / variant).mkdir(parents=True)
        metrics = {"plugins": {"psychcounsel_bench": {"formats": {fmt: fig}}}}
        (run / "eval" / variant / "metrics.json").write_text(json.dumps(metrics))
    res = load_seed("seed004-psydt").results
    assert measured(run, res[0])["correct"] == 375 and measured(run, res[1]) is None
    text = recipe_section("seed004-psydt", run_dir=run)
    assert "| 专业心理咨询师格式, base | 80.60% (403/500) |" in text and "| 75.00% (375/500) |" in text
    assert "| 专业心理咨询师格式, base, project's protocol | 80.60% (403/500) |" in text and "| 24.90% (124/498) |" in text


# ---------------------------------------------------------------------------- Slurm


def test_sbatch_dry_run_renders_the_recipe_chain(tmp_path, monkeypatch):
    env = {**__import__("os").environ, "HOME": str(tmp_path), "PSY_RUNS_DIR": str(tmp_path / "runs")}
    env.pop("PSY_SLURM_PROFILE", None)
    res = subprocess.run(["make", "-s", "sbatch", "RECIPE=seed002-student", "DRY_RUN=1"], cwd=paths.REPO_ROOT,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.findall(r"# ===== ([\w-]+):", out) == ["train", "merge", "gguf", "eval", "eval-gguf"]
    who = "--run seed002-student --recipe seed002-student --model deepseek-r1-distill-qwen-1.5b --task student"
    assert f"psy_run psyfactory train {who}" in out and f"psyfactory slurm-prepare {who}" in out
    assert f"psy_run psyfactory gguf --quant Q4_K_M {who}" in out
    assert ("psy_run psyfactory reproduce --steps eval,compare,report --run seed002-student --recipe seed002-student "
            "--hw a40") in out
    assert "--job-name=psy-eval-seed002-student" in out
    # what each job reads is what it waits for: eval the adapter (train), eval-gguf the export (gguf)
    assert re.search(r"--dependency=afterok:<train-jobid>'? --kill-on-invalid-dep=yes \S+/eval\.sbatch", out)
    assert re.search(r"--dependency=afterok:<gguf-jobid>'? --kill-on-invalid-dep=yes \S+/eval-gguf\.sbatch", out)
    for key in ("HOME", "PSY_RUNS_DIR"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("PSY_SLURM_PROFILE", raising=False)
    import io

    from psyfactory import slurm
    from psyfactory.cli import build_parser
    from psyfactory.commands.slurm import _request

    profile = slurm.load_profile()
    req = _request(build_parser().parse_args(["sbatch", "--recipe", "seed004-psydt", "--dry-run"]), profile)
    assert (req.run, req.recipe, req.stages) == ("seed004-psydt", "seed004-psydt", ("train", "merge", "eval"))
    assert req.hw == "a40"  # HW=auto on a login node: the profile's hardware
    buf = io.StringIO()
    slurm.submit(req, profile, dry_run=True, out=buf)
    assert re.findall(r"# ===== ([\w-]+):", buf.getvalue()) == ["train", "merge", "eval"]  # no GGUF in seed 004
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_make_reproduce_runs_the_chain_on_cpu(tiny_run, tmp_path, monkeypatch):
    """`make reproduce RECIPE=tiny-student`: train (QLoRA, foreign template, in-training validation with the
    best checkpoint kept, TensorBoard) -> merge -> eval tuned and base -> compare -> GGUF Q4_K_M -> report,
    on the student set the session's demo prepared."""
    runs = tmp_path / "runs"
    env = tiny_run.env(PSY_RUNS_DIR=str(runs))
    res = subprocess.run(["make", "-s", "reproduce", "RECIPE=tiny-student", "HW=cpu"], cwd=paths.REPO_ROOT,
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = runs / "tiny-student"
    for step in ("train", "merge", "eval student tuned", "eval student base", "compare", "gguf Q4_K_M"):
        assert f"[reproduce] {step} done in" in res.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["run"]["recipe"] == "tiny-student" and manifest["stages"]["train"]["status"] == "done"
    assert manifest["stages"]["merge"]["chat_template"] == "qwen"
    state = json.loads((run / "adapter" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_loss" in e]
    assert [e["step"] for e in evals] == [3, 6]  # eval_steps: 3 on the 20% validation split
    best = min(evals, key=lambda e: e["eval_loss"])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert (run / "adapter" / "training_eval_loss.png").is_file() and (run / "adapter" / "training_loss.png").is_file()
    assert list((run / "adapter" / "runs").glob("*/events.out.tfevents.*"))  # TensorBoard
    monkeypatch.setenv("PSY_RUNS_DIR", str(runs))
    tb = cli("tensorboard", "--recipe", "tiny-student", "--print-only", "--hw", "cpu")
    assert f"--logdir {run / 'adapter' / 'runs'}" in tb.stdout
    # the merged model (and its GGUF) carry the template the run trained with
    from transformers import AutoTokenizer

    merged = AutoTokenizer.from_pretrained(run / "merged")
    assert merged.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        "<|im_start|>system\nYou are Qwen")
    for variant in ("tuned", "base"):
        m = json.loads((run / "eval" / variant / "metrics.json").read_text())
        assert m["run"] == "tiny-student" and "json_labels.validity_rate" in m["headline"]
    assert "tiny-student" in (run / "compare.md").read_text()
    assert (run / "gguf" / "model-Q4_K_M.gguf").stat().st_size > 0
    report = (run / "reproduce.md").read_text()
    assert "# Reproduction: RECIPE=tiny-student" in report and "| gguf Q4_K_M |" in report
    assert "`eval/base/report.md`, `eval/tuned/report.md`" in report
    # later commands need only the run's name: the recipe comes back from the manifest
    from psyfactory.runspec import resolve

    again = resolve(run="tiny-student", hw="cpu")
    assert (again.recipe, again.config.lf["template"], again.config.lf["max_steps"]) == ("tiny-student", "qwen", 6)


@pytest.mark.slow
def test_reproduce_seed004_needs_no_step_by_hand(tiny_model, tmp_path):
    """`make reproduce RECIPE=seed004-psydt` from an empty dataset folder, with the recipe moved onto the tiny model
    (a config folder of one's own, PSY_CONFIG_DIRS): download (nothing missing here: no network), prep of the
    recipe's own unscrubbed data, training on the seed's text, merge, the three eval tasks tuned and base (the
    author's protocol and the project's), compare, and the report with the seed's table beside both."""
    shared = paths.REPO_ROOT.parent / "shared" / "datasets"
    example, bench = shared / "PsyDTCorpus" / "PsyDTCorpus_README_example.json", \
        shared / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"
    if not (example.is_file() and bench.is_file()):
        pytest.skip(f"the PsyDTCorpus example or the benchmark is not under {shared}")
    raw = tmp_path / "raw"
    (raw / "PsyDTCorpus").mkdir(parents=True)
    dialogue = json.loads(example.read_text(encoding="utf-8"))[0]
    # the real files' names, in their shapes: the dialogue as the train file, its per-turn split as the test file
    (raw / "PsyDTCorpus" / "PsyDTCorpus_train_mulit_turn_packing.json").write_text(
        json.dumps([dialogue], ensure_ascii=False), encoding="utf-8")
    turns = [{"id": i, "normalizedTag": dialogue["normalizedTag"], "messages": dialogue["messages"][: i + 1]}
             for i, m in enumerate(dialogue["messages"]) if m["role"] == "assistant"][:4]
    (raw / "PsyDTCorpus" / "PsyDTCorpus_test_single_turn_split.json").write_text(json.dumps(turns, ensure_ascii=False),
                                                                                  encoding="utf-8")
    (raw / "PsychCounsel-Bench").mkdir()
    for name in ("PsychCounsel-Bench.json", "PsychoBench.json"):
        (raw / "PsychCounsel-Bench" / name).symlink_to(bench)
    mine = tmp_path / "configs" / "recipes"
    mine.mkdir(parents=True)
    text = (paths.CONFIG_DIR / "recipes" / "seed004-psydt.yaml").read_text(encoding="utf-8")
    (mine / "seed004-psydt.yaml").write_text(text.replace("  model: qwen3-4b\n", "  model: tiny\n"), encoding="utf-8")
    (tmp_path / "ds").mkdir()
    env = {**__import__("os").environ, "PSY_CONFIG_DIRS": str(tmp_path / "configs"), "PSY_RUNS_DIR": str(tmp_path / "runs"),
           "PSY_DATASET_DIR": str(tmp_path / "ds"), "PSY_RAW_DIR": str(raw), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["make", "-s", "reproduce", "RECIPE=seed004-psydt", "HW=cpu", "LIMIT=3",
                          "ARGS=max_steps=2 fp16=false eval_steps=1 save_steps=1 dataloader_num_workers=0 "
                          "psy.generation.max_new_tokens=16"],
                         cwd=paths.REPO_ROOT, capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for step in ("download", "prep", "train", "merge", "eval psydt tuned", "eval seed004-exact base",
                 "eval psychcounsel tuned", "compare"):
        assert f"[reproduce] {step} done in" in res.stdout, step
    run = tmp_path / "runs" / "seed004-psydt"
    ds = tmp_path / "ds" / "data" / "seed004-psydt"
    row = json.loads((ds / "train_text.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert row["text"] == "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in dialogue["messages"])
    assert all(a["pii_scrub"] is False for a in json.loads((ds / "accounting.json").read_text(encoding="utf-8")))
    cfg = yaml.safe_load((run / "train.yaml").read_text(encoding="utf-8"))
    assert (cfg["template"], cfg["train_on_prompt"], cfg["dataset"], cfg["lr_scheduler_type"]) == (
        "empty", True, "seed004-psydt_train_text", "linear")
    exact = json.loads((run / "eval" / "seed004-exact-base" / "metrics.json").read_text(encoding="utf-8"))
    assert exact["plugins"]["psychcounsel_bench"]["n_items"] == 3
    items = (run / "eval" / "seed004-exact-tuned" / "psychcounsel_bench_items.jsonl").read_text(encoding="utf-8")
    assert len(items.splitlines()) == 9 and '"generation"' in items
    report = (run / "reproduce.md").read_text(encoding="utf-8")
    for line in ("| 专业心理咨询师格式, base | 80.60% (403/500) |", "| 对话格式, tuned | 2.20% (11/500) |",
                 "| 专业心理咨询师格式, base, project's protocol | 80.60% (403/500) |"):
        row_text = next(x for x in report.splitlines() if x.startswith(line))
        assert re.search(r"\| \d+\.\d\d% \(\d+/3\) \|$", row_text), row_text  # this run's figure beside the seed's
    assert "| prep |" in report and "| download |" in report
