"""GGUF export / verification / inference on the session's tiny run (CPU, ~1-2 min in total)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jsonschema
import pytest
from psyutil import one_error_line

from psyfactory import gguf
from psyfactory.gguf.convert import convert as gguf_convert
from psyfactory.gguf.convert import quantize
from psyfactory.gguf.modelfile import ChatLayout, write_modelfile
from psyfactory.gguf.verify import F16_MAX_REL_LOGIT_ERROR, F16_MIN_AGREEMENT, generate, verify

# Tests that run llama.cpp (convert, quantize, load) are slow; the rest runs in `make test-fast`.
GGUF_SKIP = "GGUF stack not installed: run `make setup-gguf`"

STUDENT_DIALOGUES = [
    "最近考试压力很大，每天晚上都睡不着。",
    "我和室友吵架了，感觉没人理解我。",
    "I failed my exam again and I feel hopeless.",
    "老师说我成绩下降了，我很害怕告诉父母。",
    "我有时候会想，如果我消失了会不会更好。",
    "这学期挺开心的，交到了新朋友。",
    "每天都很累，不想上课，也不想见人。",
    "我总是担心自己做错事，心跳很快。",
]


def student_conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "根据对话评估学生心理状态，只输出JSON标签。"},
             {"role": "user", "content": STUDENT_DIALOGUES[i % len(STUDENT_DIALOGUES)] + f"（样本{i}）"}]
            for i in range(n)]


# ------------------------------------------------------------------ no llama.cpp needed
def test_missing_stack_names_the_setup_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from psyfactory.cli import main

    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # an environment where setup-gguf never ran
    with pytest.raises(gguf.GGUFUnavailable, match="make setup-gguf"):
        gguf.setup_info()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a))
    with pytest.raises(gguf.GGUFUnavailable, match="llama-cpp-python is missing.*make setup-gguf"):
        gguf.setup_info()
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    for command in ("chat-gguf", "predict-gguf"):
        assert main([command, "--model", "tiny", "--task", "student", "--hw", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "GGUF support is not installed" in err and "Enable it with: make setup-gguf" in err, command
    # `make gguf` says first what it would export from, before any setup or build (make runs --check-only first)
    for args in (["--check-only"], []):
        assert main(["gguf", *args, "--model", "tiny", "--task", "student", "--hw", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "merged model not found; run `make merge RUN=tiny/student/lora` first" in err


def test_header_check_rejects_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(gguf.GGUFError, match="not found"):
        gguf.check_gguf_file(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(gguf.GGUFError, match="not a GGUF file"):
        gguf.check_gguf_file(bad)
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF\x03")
    with pytest.raises(gguf.GGUFError, match="not a GGUF file"):
        gguf.check_gguf_file(short)


def test_ollama_layout_reproduces_hf_template(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    convo = [{"role": "system", "content": "你是咨询师。"}, {"role": "user", "content": "你好"},
             {"role": "assistant", "content": "你好，请说。"}, {"role": "user", "content": "我睡不着。"}]
    for thinking in (False, True):
        layout = ChatLayout.from_tokenizer(tok, enable_thinking=thinking)
        expected = tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
        assert layout.render(convo) == expected
        assert ("<think>" in layout.generation_prompt) is (not thinking)  # empty think block only when off
        assert layout.matches(tok, enable_thinking=thinking)
        template = layout.ollama_template()
        assert template.startswith("{{- range .Messages }}") and template.count("{{ .Content }}") == 3


BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
                "{{ raise_exception('System role not supported') }}{% endif %}"
                "<turn>{{ m['role'] }}\n{{ m['content'] }}<end>\n{% endfor %}"
                "{% if add_generation_prompt %}<turn>assistant\n{% endif %}")
DEFAULT_SYSTEM_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}[SYS]default[/SYS]{% endif %}"
                           "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                           "{% if add_generation_prompt %}[assistant]{% endif %}")


def test_ollama_layout_bos_once_and_unsupported_system(tiny_dir: Path) -> None:
    """Gemma-like templates: BOS once per conversation, no system role."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.bos_token = "<|endoftext|>"
    tok.chat_template = BOS_TEMPLATE
    layout = ChatLayout.from_tokenizer(tok, enable_thinking=False)
    assert layout.prefix == "<|endoftext|>" and "system" not in layout.wrappers
    assert layout.matches(tok, enable_thinking=False)
    assert layout.ollama_template().startswith("<|endoftext|>{{- range .Messages }}")


def test_modelfile_without_template_when_layout_cannot_reproduce(tiny_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.chat_template = DEFAULT_SYSTEM_TEMPLATE  # injects a system turn when there is none
    tok.save_pretrained(tmp_path / "tok")
    path = write_modelfile(tmp_path, "m.gguf", tmp_path / "tok", enable_thinking=False, label_task=False)
    text = path.read_text(encoding="utf-8")
    assert "FROM ./m.gguf" in text and "TEMPLATE" not in text
    assert "not a plain per-role layout" in capsys.readouterr().err


# ------------------------------------------------------------------ export (make gguf) on tiny
@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_export_writes_sizes_and_modelfile(exported: dict) -> None:
    report, out = exported["report"], exported["run"] / "gguf"
    f16, q4 = report["files"]["F16"], report["files"]["Q4_K_M"]
    assert Path(f16["path"]) == out / "model-f16.gguf" and Path(q4["path"]).stat().st_size == q4["bytes"]
    assert q4["bytes"] < f16["bytes"] and q4["ratio_to_f16"] == round(q4["bytes"] / f16["bytes"], 4)
    for name in ("model-f16.gguf", "model-Q4_K_M.gguf", "adapter-f16.gguf", "Modelfile", "export.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp.gguf"))  # no temp files left behind
    modelfile = (out / "Modelfile").read_text(encoding="utf-8")
    assert "FROM ./model-Q4_K_M.gguf" in modelfile
    # student is a label task on a hybrid-reasoning template: generation prompt closes the think block
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n\"\"\"" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0" in modelfile
    assert "GGUF export" in exported["stderr"]  # the size / verification table was printed
    lora_modelfile = (out / "Modelfile.lora").read_text(encoding="utf-8")
    assert "FROM ./base-f16.gguf\nADAPTER ./adapter-f16.gguf\n" in lora_modelfile


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_tiny_tokenizer_notice_is_visible(exported: dict) -> None:
    assert "NOTICE" in exported["stderr"] and "locally trained tiny tokenizer" in exported["stderr"]


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_chat_prompt_tokenization_matches_hf(exported: dict) -> None:
    for name in ("F16", "Q4_K_M", "LORA"):
        v = exported["report"]["verification"][name]
        assert v["tokens_equal"], (name, v["prompts"])
        assert all(p["n_prompt_tokens"] > 5 for p in v["prompts"])


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_f16_logits_match_hf(exported: dict) -> None:
    v = exported["report"]["verification"]["F16"]
    assert exported["report"]["f16_ok"]
    assert v["greedy_agreement"] >= F16_MIN_AGREEMENT
    assert v["max_rel_logit_error"] <= F16_MAX_REL_LOGIT_ERROR
    assert v["max_logit_error"] <= 0.01  # tiny: fp32 weights, logits of order 1
    assert sum(p["positions"] for p in v["prompts"]) >= 3 * 8


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_lora_adapter_gguf_matches_merged_model(exported: dict) -> None:
    v = exported["report"]["verification"]["LORA"]
    assert v["lora"].endswith("adapter-f16.gguf")
    assert v["greedy_agreement"] >= F16_MIN_AGREEMENT
    assert v["max_rel_logit_error"] <= F16_MAX_REL_LOGIT_ERROR  # f16 base + f16 adapter vs fp32 merge


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_q8_0_is_closer_to_hf_than_q4_k_m(exported: dict, tmp_path: Path) -> None:
    out = exported["run"] / "gguf"
    q8 = quantize(out / "model-f16.gguf", tmp_path / "model-Q8_0.gguf", "Q8_0")
    v8 = verify(q8, exported["run"] / "merged")
    v4 = exported["report"]["verification"]["Q4_K_M"]
    assert v8.tokens_equal
    assert v8.max_logit_error < v4["max_logit_error"]
    assert 0.0 <= v4["greedy_agreement"] <= 1.0
    assert q8.stat().st_size < (out / "model-f16.gguf").stat().st_size
    replies = generate(q8, [[{"role": "user", "content": "你好"}]], max_new_tokens=8)  # load -> chat
    assert len(replies) == 1 and isinstance(replies[0], str)


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_chat_gguf_answers(exported: dict, runs_root: Path, cli, make, student_schema: dict, tmp_path: Path) -> None:
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(student_schema), encoding="utf-8")
    proc = cli("chat-gguf", "--model", "tiny", "--task", "psydt", "--method", "lora", "--hw", "cpu",
               "--message", "你好", "--max-new-tokens", "8", env={"PSY_RUNS_DIR": str(runs_root)}, check=False)
    assert one_error_line(proc).endswith("not found; export the run first with `make gguf` "
                                         "(QUANT=..., ARGS=--lora for the adapter files)")  # psydt has no export
    crisis = "我真的不想活了。"
    proc = make("chat-gguf", "RUN=tiny/student/lora", "HW=cpu",
                f"ARGS=--message '{STUDENT_DIALOGUES[0]}' --message '{STUDENT_DIALOGUES[1]}' --message '{crisis}' "
                f"--schema {schema_file}", env={"PSY_RUNS_DIR": str(runs_root)})
    turns = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [t["user"] for t in turns] == [*STUDENT_DIALOGUES[:2], crisis]
    for t in turns:
        jsonschema.validate(json.loads(t["assistant"]), student_schema)
    # the crisis safety net (what `make eval` applies): raises risk_flag from none, never lowers it
    assert [t["safety_net"]["class"] for t in turns] == [None, None, "suicidal"]
    net = turns[2]["safety_net"]
    model = json.loads(turns[2].get("model", turns[2]["assistant"]))
    assert net["model"] == model["risk_flag"] and net["raised"] == (model["risk_flag"] == "none")
    assert json.loads(turns[2]["assistant"]) == {**model, "risk_flag": net["value"]}  # only that field changed
    assert net["value"] == ("suicidal" if net["raised"] else model["risk_flag"])


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_constrained_decoding_always_schema_valid(exported: dict, student_schema: dict) -> None:
    from psyfactory.data_prep.teacher import student_schema as label_schema

    labels = label_schema()
    convs = student_conversations(16)
    path = exported["run"] / "gguf" / "model-Q4_K_M.gguf"
    constrained = generate(path, convs, max_new_tokens=96, json_schema=student_schema)
    assert len(constrained) == len(convs)
    for text in constrained:  # 100%: every output is plain JSON (no extraction needed) and valid
        value = json.loads(text)
        assert labels.reasons(value) == [], text
        jsonschema.validate(value, student_schema)
    free = generate(path, convs, max_new_tokens=32)
    assert len(free) == len(convs)
    valid = sum(labels.parse(text).labels is not None for text in free)
    assert valid < len(convs)  # the random-weight model cannot produce the labels unconstrained


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_backend_option_logprobs_match_hf(exported: dict) -> None:
    """GGUFBackend.option_logprobs (Backend protocol) against the same computation in transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psyfactory.gguf.backend import GGUFBackend

    merged = exported["run"] / "merged"
    backend = GGUFBackend(exported["run"] / "gguf" / "model-f16.gguf", progress=False)
    prompts = student_conversations(2)
    options = [["sadness", "joy"], ["anger", "fear and worry"]]
    got = backend.option_logprobs(prompts, options)
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    for conv, opts, row in zip(prompts, options, got, strict=True):
        prompt = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True, return_dict=False,
                                         enable_thinking=False)
        for opt, value in zip(opts, row, strict=True):
            ids = tok(opt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].double(), -1)
            ref = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))
            assert value == pytest.approx(ref, abs=0.05)


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_backend_for_run_is_the_eval_integration_point(exported: dict, tiny_dir: Path) -> None:
    from psyfactory.core.generation import GenerationSpec
    from psyfactory.gguf.backend import EvalChoice, backend_for_run

    run = exported["run"]
    with backend_for_run(run, EvalChoice("Q4_K_M", lora=False, constrained=True), reasoning="hybrid") as be:
        assert be.name == "gguf (model-Q4_K_M.gguf)" and be.llm.model_path.endswith("model-Q4_K_M.gguf")
        assert "<think>\n\n</think>" in be.prompt([{"role": "user", "content": "hi"}])
        assert len(be.generate(student_conversations(2), GenerationSpec(max_new_tokens=4))) == 2
    lora = EvalChoice("Q4_K_M", lora=True, constrained=False)
    with backend_for_run(run, lora) as be:  # base-f16 + adapter-f16
        assert be.llm.lora_path.endswith("adapter-f16.gguf") and not be.constrained
    assert lora.variant() == "gguf-lora-free"
    with pytest.raises(gguf.GGUFError, match="model-Q6_K.gguf: not found"):
        backend_for_run(run, EvalChoice("Q6_K", lora=False, constrained=True))


# ------------------------------------------------------------------ failure modes
@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_setup_gguf_reuses_the_cached_wheel() -> None:
    """A second `make setup-gguf` installs the cached wheel instead of compiling llama.cpp again."""
    import subprocess

    from psyfactory.core.paths import REPO_ROOT

    info = gguf.setup_info()
    assert Path(info["wheel"]).is_file() and Path(info["converter_dir"], "conversion").is_dir()
    proc = subprocess.run(["bash", "scripts/setup_gguf.sh"], cwd=REPO_ROOT, text=True, capture_output=True,
                          env={**os.environ, "VENV": sys.prefix})
    assert proc.returncode == 0, proc.stderr
    assert "reusing cached wheel" in proc.stdout and "compiling" not in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_prompt_longer_than_context_fails_before_generating(exported: dict) -> None:
    from psyfactory.core.generation import GenerationSpec
    from psyfactory.gguf.backend import GGUFBackend

    long_conv = [{"role": "user", "content": "我很难过。" * 200}]
    msg = r"1 prompt\(s\) .* exceed the GGUF context of 256 tokens.*PSY_GGUF_CTX"
    with GGUFBackend(exported["run"] / "gguf" / "model-Q4_K_M.gguf", n_ctx=256, progress=False) as be, \
            pytest.raises(gguf.GGUFError, match=msg):
        be.generate([student_conversations(1)[0], long_conv], GenerationSpec(max_new_tokens=16))



@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_corrupt_gguf_is_a_clear_error_not_a_crash(exported: dict, tmp_path: Path) -> None:
    f16 = exported["run"] / "gguf" / "model-f16.gguf"
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(f16.read_bytes()[: 200_000])  # valid header, tensor data cut off
    with pytest.raises(gguf.GGUFError, match="generate with truncated.gguf failed"):
        generate(truncated, student_conversations(1), max_new_tokens=4)
    with pytest.raises(gguf.GGUFError, match="not found"):
        verify(tmp_path / "missing.gguf", exported["run"] / "merged")
    with pytest.raises(gguf.GGUFError, match="quantization"):
        quantize(f16, tmp_path / "x.gguf", "Q3_BOGUS")


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_unknown_tokenizers_are_still_rejected(exported: dict, tiny_dir: Path, tmp_path: Path) -> None:
    """The tiny-tokenizer exception must not leak to other unrecognized tokenizers."""
    other = tmp_path / "other"
    shutil.copytree(exported["run"] / "merged", other)
    tok_file = other / "tokenizer.json"
    data = json.loads(tok_file.read_text(encoding="utf-8"))
    data["model"]["merges"] = data["model"]["merges"][:-200]  # a different BPE => different hash
    tok_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(gguf.GGUFError, match="pre-tokenizer was not recognized"):
        gguf_convert(other, tmp_path / "other.gguf", local_tokenizer=tiny_dir)
    assert not (tmp_path / "other.gguf").exists() and not list(tmp_path.glob(".*.tmp.gguf"))


# ------------------------------------------------------------------ make eval --backend gguf
STUDENT_EVAL = [  # our own miniature student eval split (alpaca, labels as a JSON string)
    ("学生：期末周压力很大，但还能睡着。", (0, 1, "none", 2)),
    ("学生：我觉得活着没有意义，想过结束生命。", (3, 2, "suicidal", 9)),
    ("学生：难受的时候我会掐自己。", (2, 2, "self_harm", 7)),
    ("学生：那个同学再嘲笑我，我就动手。", (1, 2, "violence", 6)),
    ("学生：最近和朋友相处得很好。", (0, 0, "none", 1)),
    ("学生：一想到答辩就心慌，手发抖。", (1, 3, "none", 5)),
]


def write_student_eval(root: Path) -> Path:
    keys = ("depression_level", "anxiety_level", "risk_flag", "student_distress_score")
    rows = [{"instruction": "评估学生的心理状态，只输出JSON。", "input": text,
             "output": json.dumps(dict(zip(keys, labels, strict=True)), ensure_ascii=False)}
            for text, labels in STUDENT_EVAL]
    path = root / "data" / "student" / "eval.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    info = {"student_eval": {"file_name": "data/student/eval.jsonl",
                             "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}
    (root / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return root


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_make_eval_with_gguf_backend(exported: dict, runs_root: Path, make, tmp_path: Path) -> None:
    env = {"PSY_RUNS_DIR": str(runs_root), "PSY_DATASET_DIR": str(write_student_eval(tmp_path / "ds"))}
    make("eval", "RUN=tiny/student/lora", "HW=cpu", "EVAL_ARGS=--backend gguf", env=env)
    make("eval", "RUN=tiny/student/lora", "HW=cpu", "EVAL_ARGS=--backend gguf", env={**env, "PSY_GGUF_CONSTRAINED": "0"})
    evals = exported["run"] / "eval"
    constrained = json.loads((evals / "gguf-Q4_K_M" / "metrics.json").read_text(encoding="utf-8"))
    free = json.loads((evals / "gguf-Q4_K_M-free" / "metrics.json").read_text(encoding="utf-8"))
    assert constrained["backend"] == "gguf (model-Q4_K_M.gguf)"
    assert free["backend"] == "gguf (model-Q4_K_M.gguf, unconstrained)"
    assert constrained["n"] == free["n"] == len(STUDENT_EVAL)
    assert constrained["plugins"]["json_labels"]["validity_rate"] == 1.0  # the random model, constrained
    assert free["plugins"]["json_labels"]["validity_rate"] < 1.0
    base = subprocess_make_error(make, "eval", "RUN=tiny/student/lora", "HW=cpu", "BASE=1",
                                 "EVAL_ARGS=--backend gguf", env=env)
    assert "the gguf backend evaluates a run's export" in base


@pytest.mark.slow
@pytest.mark.skipif(not gguf.available(), reason=GGUF_SKIP)
def test_make_predict_gguf_writes_llamafactory_format(exported: dict, runs_root: Path, make, tmp_path: Path) -> None:
    from psyfactory.data_prep.teacher import student_schema

    env = {"PSY_RUNS_DIR": str(runs_root), "PSY_DATASET_DIR": str(write_student_eval(tmp_path / "ds"))}
    make("predict-gguf", "RUN=tiny/student/lora", "HW=cpu", env=env)
    rows = [json.loads(line) for line in (exported["run"] / "gguf" / "predict-Q4_K_M" / "generated_predictions.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    assert [json.loads(r["label"])["risk_flag"] for r in rows] == [lab[2] for _, lab in STUDENT_EVAL]
    assert all(r["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for r in rows)
    assert all(student_schema().parse(r["predict"]).labels is not None for r in rows)


def subprocess_make_error(make, *args: str, env: dict[str, str]) -> str:
    """A `make` call that must fail with one `error:` line (no traceback); returns that line."""
    with pytest.raises(AssertionError) as exc:
        make(*args, env=env)
    text = str(exc.value)
    assert "Traceback" not in text, text
    return next(line for line in text.splitlines() if line.startswith("error: "))
