"""HF backend on the tiny model: batching with left padding is exact, loglik paths agree, adapters apply."""

from __future__ import annotations

import pytest
import torch

from psyfactory.core.errors import EvalError
from psyfactory.core.generation import GenerationSpec
from psyfactory.inference import HFBackend, make_backend, strip_think, vllm_unavailable_reason

CONVS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "You are a counselor."},
     {"role": "user", "content": "I have been sleeping badly for weeks and feel tired at school."}],
    [{"role": "user", "content": "我最近很焦虑，怎么办？"}],
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", ("plain", False)),
        ("<think>\nreasoning\n</think>\n\nC", ("C", True)),
        ("<think>ran out of tokens", ("", True)),
        ("reasoning whose tag was in the prompt</think>answer", ("answer", True)),
        ("<think></think>a<think>x</think>b", ("ab", True)),
    ],
)
def test_strip_think(text, expected) -> None:
    assert strip_think(text) == expected


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(tiny_model, reasoning="hybrid", batch_size=3, progress=False)


def test_render_disables_thinking(backend) -> None:
    assert backend.render(CONVS[0]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert backend.tokenizer.padding_side == "left"


def test_batched_generation_equals_one_by_one(backend) -> None:
    batched = backend.generate(CONVS, GenerationSpec(max_new_tokens=12))
    backend.batch_size = 1
    try:
        single = backend.generate(CONVS, GenerationSpec(max_new_tokens=12))
    finally:
        backend.batch_size = 3
    assert batched == single
    assert all(isinstance(t, str) for t in batched) and "<|im_end|>" not in "".join(batched)


def test_loglik_fast_path_matches_teacher_forcing(backend) -> None:
    letters = [["A", "B"], ["A", "B", "C", "D"], ["A", "B", "C", "D", "E"]]
    fast = backend.option_logprobs(CONVS, letters)
    # reference: unpadded full forward pass of prompt + letter, log p(letter | prompt)
    for conv, opts, got in zip(CONVS, letters, fast, strict=True):
        ids = backend.tokenizer(backend.render(conv), add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(backend.model(input_ids=ids).logits[0, -1].float(), -1)
        want = [float(logp[backend.tokenizer(o, add_special_tokens=False).input_ids[0]]) for o in opts]
        assert got == pytest.approx(want, abs=1e-4)
    # multi-token options take the continuation path; a 1-token option scores the same there
    multi = backend.option_logprobs(CONVS[:1], [["A", "Yes, that is right."]])
    assert multi[0][0] == pytest.approx(fast[0][0], abs=1e-4)
    assert multi[0][1] < multi[0][0]  # several random-model tokens are less likely than one


def test_multi_token_options_match_unpadded_teacher_forcing(backend) -> None:
    options = [["Yes, that is right.", "no", "I am not sure at all"]] * len(CONVS)
    got = backend.option_logprobs(CONVS, options)  # batched, left-padded, logits of the last positions only
    for conv, opts, row in zip(CONVS, options, got, strict=True):
        prompt = backend.tokenizer(backend.render(conv), add_special_tokens=False).input_ids
        for opt, value in zip(opts, row, strict=True):
            opt_ids = backend.tokenizer(opt, add_special_tokens=False).input_ids
            with torch.inference_mode():
                logp = torch.log_softmax(backend.model(input_ids=torch.tensor([prompt + opt_ids])).logits[0].float(), -1)
            want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(opt_ids))
            assert value == pytest.approx(want, abs=1e-3)


def test_adapter_is_applied(tiny_model, backend, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    tuned = HFBackend(tiny_model, tmp_path / "adapter", reasoning="hybrid", progress=False)
    base_lp = backend.option_logprobs(CONVS[:1], [["A", "B"]])[0]
    tuned_lp = tuned.option_logprobs(CONVS[:1], [["A", "B"]])[0]
    assert tuned_lp != pytest.approx(base_lp, abs=1e-4)
    with pytest.raises(EvalError, match="adapter_config.json missing"):
        HFBackend(tiny_model, tmp_path / "nowhere", progress=False)


def test_backend_choice_without_vllm(tiny_model) -> None:
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("vLLM is usable here; this test covers machines without it")
    assert make_backend("auto", tiny_model, progress=False).name == "hf"
    with pytest.raises(EvalError, match=f"--backend vllm: {reason}"):
        make_backend("vllm", tiny_model)


@pytest.mark.gpu
def test_vllm_backend_generates(tiny_model) -> None:
    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(f"vLLM backend needs vllm and a CUDA GPU: {reason}")
    be = make_backend("vllm", tiny_model)
    assert len(be.generate(CONVS, GenerationSpec(max_new_tokens=8))) == 3


def test_render_folds_system_for_templates_without_it(tiny_model) -> None:
    be = HFBackend(tiny_model, progress=False)
    be.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>")
    be.fold_system = not be._supports_system()
    assert be.fold_system
    assert be.render(CONVS[1]) == ("<user>You are a counselor.\n\nI have been sleeping badly for weeks and feel "
                                   "tired at school.\n<assistant>")


def test_render_closes_think_for_always_reasoning_templates(tiny_model) -> None:
    be = HFBackend(tiny_model, reasoning="always", progress=False)
    be.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}<|Assistant|><think>\n"
    assert be.render(CONVS[0]) == "hello<|Assistant|><think>\n\n</think>\n\n"
    assert not be.fold_system
