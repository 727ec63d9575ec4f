"""json_fields (five-field ES summary), the submission file, and the paired test of per-item scores."""

from __future__ import annotations

import json

import pytest

from psyfactory.core.labels import load_schema
from psyfactory.plugins import EvalContext, Sample, TaskInfo, get_plugin
from psyfactory.plugins.base import paired_difference
from psyfactory.plugins.submission import Options as SubmissionOptions

FIELDS = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")


def summary(**over: str) -> str:
    return json.dumps({f: over.get(f, f"the {f} of this case") for f in FIELDS})


def test_json_fields_validity_and_per_field_scores(tmp_path) -> None:
    schema = load_schema("evaluation/schemas/es_summary.json")
    refs = [summary(), summary(causes="adoption and loss"), summary()]
    outs = [summary(),  # identical: 1.0 on every field
            "```json\n" + summary(causes="work stress") + "\n```",  # valid (fenced), causes differs
            json.dumps({"causes": "x"})]  # missing fields: invalid, 0 everywhere
    samples = [Sample(f"longemotion-es-{i}", [], r) for i, r in enumerate(refs)]
    res = get_plugin("json_fields").run(EvalContext(TaskInfo("es_summary", label_schema=schema), tmp_path, samples, outs))
    m = res.metrics
    assert (m["n"], m["valid"]) == (3, 2) and m["failure_reasons"] == {
        f"missing_key:{f}": 1 for f in FIELDS[1:]}
    assert m["fields"]["symptoms"]["rouge-l"] == pytest.approx(2 / 3)  # 1, 1, 0
    assert m["fields"]["causes"]["rouge-l"] == pytest.approx(1 / 3)  # 1, 0 (no shared word), 0
    assert [it["valid"] for it in res.items] == [True, True, False]
    assert res.items[0]["mean_rouge_l"] == pytest.approx(1.0) and res.items[2]["mean_rouge_l"] == 0.0
    assert get_plugin("json_fields").paired_scores(res.items)["mean rouge-l"]["longemotion-es-0"] == pytest.approx(1.0)


def test_submission_file_in_longemotion_shape(tmp_path) -> None:
    samples = [Sample(f"longemotion-es-{i}", [], "ref") for i in (1, 2, 10)]
    opts = SubmissionOptions(file="sub.jsonl", field="experience_and_reflection", id_prefix="longemotion-es-")
    res = get_plugin("submission").run(EvalContext("es", tmp_path, samples, ["a", "b", "c"], options=opts))
    lines = [json.loads(x) for x in (tmp_path / "sub.jsonl").read_text().splitlines()]
    assert lines == [{"id": 1, "experience_and_reflection": "a"}, {"id": 2, "experience_and_reflection": "b"},
                     {"id": 10, "experience_and_reflection": "c"}]
    assert res.metrics == {"n": 3, "file": "sub.jsonl", "field": "experience_and_reflection"}


def test_paired_difference_exact_values() -> None:
    r = paired_difference([0.1, 0.2, 0.3, 0.2, 0.1], [0.3, 0.4, 0.5, 0.4, 0.3])
    assert r["diff"] == pytest.approx(0.2) and r["ci95"] == pytest.approx([0.2, 0.2])
    assert r["p_value"] == pytest.approx(2 / 2**5)  # exact sign-flip test: only all-positive / all-negative
    flat = paired_difference([0.1, 0.5, 0.3, 0.2, 0.4, 0.6], [0.2, 0.4, 0.35, 0.1, 0.5, 0.55])
    assert abs(flat["diff"]) < 1e-9 and flat["p_value"] > 0.9 and flat["ci95"][0] < 0 < flat["ci95"][1]
    assert paired_difference([0.5], [0.5])["p_value"] == 1.0


def test_compare_runs_the_score_test_for_generation(tmp_path) -> None:
    from psyfactory.compare import compare

    fp = {"data_sha256": {"e.jsonl": "x"}, "options": {}, "generation": {"max_new_tokens": 16}}
    for variant, scores in (("base", [0.1, 0.2, 0.1, 0.3]), ("tuned", [0.3, 0.4, 0.3, 0.5])):
        d = tmp_path / "r" / "eval" / variant
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "run": "r", "model": "tiny", "task": "psyqa", "variant": variant, "kind": "base" if variant == "base" else "tuned",
            "fingerprint": fp, "plugins": {"generation": {"n": 4, "rouge-l": sum(scores) / 4}}}))
        (d / "generation_items.jsonl").write_text("".join(
            json.dumps({"id": str(i), "rouge-l": s, "bleu-4": s / 2}) + "\n" for i, s in enumerate(scores)))
    md = compare(tmp_path)[0].read_text()
    assert "## Paired tests of per-item scores" in md
    assert "| tiny | psyqa | r | tuned | r · base | generation | rouge-l | 4 | 0.2000 | [+0.2000, +0.2000] | 0.1250 |" in md
