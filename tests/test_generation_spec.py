"""One generation spec from one task file reaches every generation path unchanged: LLaMA-Factory predict
and chat, the transformers backend, llama.cpp (GGUF) and vLLM where it is installed."""

from __future__ import annotations

import importlib.util

import pytest

from psyfactory.core.generation import GenerationSpec, cut_at_stop

TASK = """psy:
  data: {file: d.jsonl, format: openai}
  eval_plugins: [generation]
  generation: {max_new_tokens: 7, decoding: sample, temperature: 0.5, top_p: 0.9, top_k: 5, seed: 3,
               stop: ["。"], thinking: false}
cutoff_len: 256
"""
CONV = [{"role": "system", "content": "你是咨询师。"}, {"role": "user", "content": "我睡不好。"}]


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_model):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "spec.yaml").write_text(TASK, encoding="utf-8")
    monkeypatch.setenv("PSY_CONFIG_DIRS", str(tmp_path))
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    from psyfactory.runspec import resolve

    return resolve(model="tiny", task="spec", hw="cpu")


def expected(spec: GenerationSpec) -> tuple:
    return (spec.max_new_tokens, spec.sampled, spec.temperature, spec.top_p, spec.top_k)


def test_the_task_file_is_the_spec(run):
    spec = run.task.generation
    assert expected(spec) == (7, True, 0.5, 0.9, 5) and spec.seed == 3 and spec.stop == ["。"]
    assert spec.thinking is False and run.config.lf["enable_thinking"] is False  # training's switch too


def test_llamafactory_predict_and_chat(run):
    from psyfactory import runner

    for cfg in (runner.predict_config(run), runner.chat_config(run)):
        got = (cfg["max_new_tokens"], cfg["do_sample"], cfg["temperature"], cfg["top_p"], cfg["top_k"])
        assert got == expected(run.task.generation) and cfg["enable_thinking"] is False
    assert runner.predict_config(run)["seed"] == 3
    assert cut_at_stop("好的。然后", ["。"]) == "好的"  # what predict applies to LF's output (LF has no stop strings)


def test_transformers_backend(run, tiny_model):
    from psyfactory.inference import HFBackend

    be = HFBackend(tiny_model, reasoning=run.config.psy.reasoning, progress=False)
    seen = {}
    real = be.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    be.model.generate = spy
    be.generate([CONV], run.task.generation)
    cfg = seen["generation_config"]
    assert (cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k) == expected(run.task.generation)
    assert cfg.stop_strings == ["。"] and seen["tokenizer"] is be.tokenizer
    assert be.render(CONV, run.task.generation).endswith("<think>\n\n</think>\n\n")  # thinking off
    assert not be.render(CONV, run.task.generation.merged({"thinking": "template"})).endswith("</think>\n\n")
    assert be.render(CONV, run.task.generation.merged({"prompt": "plain"})) == "你是咨询师。\n我睡不好。"


def test_llama_cpp_backend(run, tiny_model):
    from transformers import AutoTokenizer

    from psyfactory.gguf.backend import GGUFBackend
    from psyfactory.inference import HFBackend

    class Llama:  # llama-cpp-python's Llama, as far as generate() uses it
        calls: list = []

        def tokenize(self, data, add_bos, special):
            return list(data[:8])

        def n_ctx(self):
            return 4096

        def set_seed(self, seed):
            self.calls.append(("seed", seed))

        def create_completion(self, ids, **kwargs):
            self.calls.append(kwargs)
            return {"choices": [{"text": "好的。然后"}]}

    be = GGUFBackend.__new__(GGUFBackend)
    be.llm, be.template = Llama(), AutoTokenizer.from_pretrained(tiny_model).chat_template
    be.bos, be.eos, be.add_bos, be.constrained, be.progress, be._grammars = "", "", False, True, False, {}
    be.reasoning = run.config.psy.reasoning
    spec = run.task.generation
    assert be.generate([CONV], spec) == ["好的"]  # cut at the stop string
    kwargs = Llama.calls[-1]
    assert (kwargs["max_tokens"], kwargs["temperature"] > 0, kwargs["temperature"], kwargs["top_p"],
            kwargs["top_k"]) == expected(spec)
    assert kwargs["seed"] == 3 and kwargs["stop"] == ["。"] and ("seed", 3) in Llama.calls
    hf = HFBackend(tiny_model, reasoning=run.config.psy.reasoning, progress=False)
    assert be.prompt(CONV, spec) == hf.render(CONV, spec)  # the same prompt text, thinking off, on both paths
    greedy = spec.merged({"decoding": "greedy"})
    be.generate([CONV], greedy)
    assert Llama.calls[-1]["temperature"] == 0.0 and Llama.calls[-1]["top_k"] == 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (CPU CI)")
def test_vllm_backend(run):
    from psyfactory.inference import VLLMBackend

    p = VLLMBackend.sampling_params(run.task.generation)
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.seed, p.stop) == (7, 0.5, 0.9, 5, 3, ["。"])
