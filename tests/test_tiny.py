"""The embedded tiny model goes through the real loaders and matches LF's qwen3 prompt format."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_loads_like_a_hub_model(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["hidden_size"] % 256 == 0
    assert cfg["intermediate_size"] % 256 == 0
    for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    text = "我最近总是睡不着，考试压力很大。"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level BPE round-trips Chinese
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


def test_tiny_chat_template_matches_llamafactory_qwen3(tiny_model):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    messages = [
        {"role": "user", "content": "老师，我很焦虑。"},
        {"role": "assistant", "content": "你愿意多说一些吗？"},
    ]
    for thinking in (False, True):
        tok = AutoTokenizer.from_pretrained(tiny_model)
        template = get_template_and_fix_tokenizer(tok, DataArguments(template="qwen3", enable_thinking=thinking))
        lf_prompt, _ = template.encode_oneturn(tok, messages, system="你是一位心理咨询师。")
        hf_prompt = tok.apply_chat_template(
            [{"role": "system", "content": "你是一位心理咨询师。"}, messages[0]],
            add_generation_prompt=True, enable_thinking=thinking, tokenize=True, return_dict=True,
        )["input_ids"]
        if thinking:  # LF puts the empty think block into the response (with loss) when thinking is on
            assert lf_prompt == hf_prompt
        else:
            assert tok.decode(lf_prompt) == tok.decode(hf_prompt)
            assert tok.decode(hf_prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
