"""llm_judge against a real OpenAI-compatible server on loopback (the session's `llamafactory-cli api`).

The random-weight tiny model never writes a valid rubric JSON, which is exactly what exercises the
failure path: every sample is retried, then reported as failed with its reason, and never scored.
"""

from __future__ import annotations

import pytest

from psyfactory.core.errors import EvalError
from psyfactory.core.llm_client import free_port
from psyfactory.plugins import EvalContext, Sample, get_plugin
from psyfactory.plugins.llm_judge import LLMJudgePlugin, OpenAIJudge, Options, load_rubric

SAMPLES = [
    Sample("t1", [{"role": "user", "content": "我最近总是失眠。"}], "失眠让你很困扰吧。", ),
    Sample("t2", [{"role": "user", "content": "考试没考好。"}], "这次结果让你很失望。"),
]


@pytest.mark.slow
def test_judge_plumbing_and_failure_accounting(lf_api, tmp_path) -> None:
    judge = OpenAIJudge(lf_api.base_url, lf_api.model, retries=1, max_tokens=16)
    plugin = LLMJudgePlugin()
    plugin.client = judge
    res = plugin.run(EvalContext("cpsycoun", tmp_path, SAMPLES, ["听起来你很累。", ""],
                                 options=Options(rubric="cpsycoune_turn")))
    # the same kind of request straight through the OpenAI client: the server really answered
    resp = judge.client._client.chat.completions.create(
        model=lf_api.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert resp.usage.completion_tokens >= 1 and resp.choices[0].finish_reason in ("stop", "length")
    m = res.metrics
    assert (m["n"], m["judged"], m["failed"], m["attempts"]) == (2, 0, 2, 4)  # 1 try + 1 retry each
    assert sum(m["failure_reasons"].values()) == 2
    assert all(reason.split(",")[0].split(":")[0] in {"empty", "no_json", "invalid_json", "not_object",
                                                      "missing_key", "extra_key", "wrong_type", "out_of_range"}
               for reason in m["failure_reasons"])
    assert m["mean"] == {"comprehensiveness": None, "professionalism": None, "authenticity": None, "safety": None}
    assert [it["scores"] for it in res.items] == [None, None]
    assert "failed after retries: 2" in res.report


def test_unreachable_judge_is_a_reported_failure(tmp_path) -> None:
    judge = OpenAIJudge(f"http://127.0.0.1:{free_port()}/v1", "nobody", retries=0, timeout=2)
    judge.client._client = judge.client._client.with_options(max_retries=0)
    reply = judge.complete_json([{"role": "user", "content": "x"}], load_rubric("cpsycoune_turn").schema())
    assert reply.value is None and reply.failure == "request_error:APIConnectionError"


def test_judge_needs_an_endpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PSY_JUDGE_BASE_URL", raising=False)
    with pytest.raises(EvalError, match="no judge endpoint"):
        get_plugin("llm_judge").run(EvalContext("psyqa", tmp_path, SAMPLES, ["a", "b"]))
