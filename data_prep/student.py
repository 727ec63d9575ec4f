"""Student mental-state assessment (4 labels) from CPsyCounD dialogues and PsyQA questions.

Pipeline per item (each step's keep count is in the accounting, `steps`): parse (speaker prefixes
stripped, same-speaker turns merged, stage directions dropped, PII scrubbed: data_prep.pii) -> the
most recent WHOLE turns (<= 12 turns and <= 2000 characters, starting with the client, alternating,
with at least one counselor turn) -> the seed's counselor-reply rule (>= 80 characters) applied to the
item: by default the mean of its counselor replies (`--reply-rule all|any`) -> keyword prefilter on the
client's words (`STUDENT_KEYWORDS`) -> the teacher labels the item and says whether it is about a
student (`student_related`: recorded, not learned) -> the crisis lexicon may raise `risk_flag`, never
lower it -> train / eval split stratified on `risk_flag` (seeded) -> optional oversampling of the risk
classes in train. Output: alpaca with `output` = the 4 labels as a JSON *string*.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm import tqdm

from psyfactory.data_prep import cpsycoun, lexicon, psyqa
from psyfactory.data_prep.common import BuildContext, DataError, Ledger, TaskOutput, stratified_split
from psyfactory.data_prep.lexicon import STUDENT_KEYWORDS, is_student  # noqa: F401 (the student filter)
from psyfactory.data_prep.teacher import RELEVANCE_KEY, LabelCache, TeacherError, split_reply, student_schema

NEEDS_TEACHER = True  # psyfactory.data_prep.prepare passes teacher= and dataset_dir= to build()
SOURCES = "CPsyCounD+PsyQA"
EVAL_FRACTION = 0.1
MIN_COUNSELOR_CHARS = 80  # seed 002: counselor (assistant) replies >= 80 characters
MAX_TURNS = 12
MAX_CHARS = 2000
SPEAKER = {"user": "来访者", "assistant": "咨询师"}
STRATIFY = "risk_flag"

STUDENT_INSTRUCTION = (
    "评估这名学生当前的心理状态。只输出一个 JSON 对象，键为 depression_level（0-3）、anxiety_level（0-3）、"
    "risk_flag（none/suicidal/self_harm/violence）、student_distress_score（0-9）。"
)


def window(turns: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """The most recent whole turns of an alternating dialogue: at most MAX_TURNS, at most MAX_CHARS as
    rendered, starting with a client turn and holding at least one counselor turn. When even the last
    client + counselor exchange does not fit, that exchange is kept with both turns clipped (the client's
    end, the counselor's start; second value True). No turn is ever dropped from inside the window."""
    turns = list(turns)
    while turns and turns[0][0] == "assistant":
        turns.pop(0)
    out: list[tuple[str, str]] = []
    total = 0
    for role, text in reversed(turns):
        size = len(SPEAKER[role]) + 1 + len(text) + (1 if out else 0)
        if len(out) >= MAX_TURNS or total + size > MAX_CHARS:
            break
        out.append((role, text))
        total += size
    out.reverse()
    while out and out[0][0] == "assistant":
        out.pop(0)
    if any(r == "assistant" for r, _ in out):
        return out, False
    last = max((i for i in range(1, len(turns)) if turns[i][0] == "assistant"), default=None)
    if last is None:
        return [], False
    half = (MAX_CHARS - 2 * (len(SPEAKER["user"]) + 2)) // 2
    client, counselor = turns[last - 1][1], turns[last][1]
    client = client if len(client) <= half else "…" + client[-(half - 1):]
    counselor = counselor if len(counselor) <= half else counselor[: half - 1] + "…"
    return [("user", client), ("assistant", counselor)], True


def render(turns: list[tuple[str, str]]) -> str:
    return "\n".join(f"{SPEAKER[r]}：{t}" for r, t in turns)


def reply_rule_ok(turns: list[tuple[str, str]], rule: str) -> tuple[bool, str]:
    """The seed's counselor-reply length rule on a whole item; (kept, detail when not)."""
    lengths = [len(t) for r, t in turns if r == "assistant"]
    if not lengths:
        return False, "no counselor reply"
    value = {"mean": statistics.mean(lengths), "all": min(lengths), "any": max(lengths)}[rule]
    if value >= MIN_COUNSELOR_CHARS:
        return True, ""
    what = {"mean": "mean counselor reply", "all": "shortest counselor reply", "any": "longest counselor reply"}[rule]
    return False, f"{what} {value:.0f} characters < {MIN_COUNSELOR_CHARS} (--reply-rule {rule})"


def build(ctx: BuildContext, eval_fraction: float | None = None) -> TaskOutput:
    raw_dir, seed, teacher, opts = ctx.raw_dir, ctx.seed, ctx.teacher, ctx.options
    eval_fraction = eval_fraction or opts.eval_share or EVAL_FRACTION
    assert ctx.dataset_dir is not None  # psyfactory.data_prep.prepare passes it to teacher tasks
    task_dir = ctx.dataset_dir / "data" / ctx.task
    dl = ctx.ledger("CPsyCounD")
    ql = ctx.ledger("PsyQA")
    rule = f"reply rule ({opts.reply_rule} >= {MIN_COUNSELOR_CHARS})"
    items: list[tuple[str, str, str, Ledger, str]] = []  # (id, text, client words, ledger, file)
    dialogues = cpsycoun.parse_d(raw_dir, dl, scrub=False)  # only the turns an item can use are scrubbed
    dl.acc.steps.update({"read": dl.acc.read, "parsed": len(dialogues)})
    kept_rule = 0
    for d in dialogues:
        recent = [(r, dl.scrub(t)) for r, t in d.turns[-(MAX_TURNS + 1):]]  # PII (data_prep.pii)
        turns, clipped = window(recent)
        dl.note("long_exchange_clipped", int(clipped))
        if len(turns) < len(d.turns):
            dl.note("trimmed_to_recent_turns")
        ok, detail = reply_rule_ok(turns, opts.reply_rule)
        if not ok:
            dl.reject(dl.rel(d.file), f"cpsycound-{d.id}", "short_counselor_replies", detail)
            continue
        kept_rule += 1
        client = "\n".join(t for r, t in d.turns if r == "user")
        items.append((f"cpsycound-{d.id}", render(turns), client, dl, dl.rel(d.file)))
    dl.acc.steps[rule] = kept_rule
    qpath = dl.rel(psyqa.find_file(raw_dir))
    questions = psyqa.parse(raw_dir, ql, answers=False)  # the answers are not part of a student item
    ql.acc.steps.update({"read": ql.acc.read, "parsed": len(questions)})  # the rule: no counselor text
    for q in questions:
        text = q.question + ("\n" + q.description if q.description else "")
        items.append((f"psyqa-{q.qid}", f"{SPEAKER['user']}：{text}", text, ql, qpath))

    todo: list[tuple[str, str, Ledger, str]] = []
    for sid, text, client, lg, file in items:
        if not client.strip():
            lg.reject(file, sid, "no_client_text")
        elif not is_student(client):
            lg.reject(file, sid, "off_topic", "no student keyword (see STUDENT_KEYWORDS)")
        else:
            todo.append((sid, text, lg, file))
    for lg in (dl, ql):
        lg.acc.steps["student keyword"] = sum(x[2] is lg for x in todo)

    cache = LabelCache(task_dir / "labels_cache.jsonl")
    keys = {sid: LabelCache.key(teacher, text) for sid, text, _, _ in todo}
    need = [(sid, text) for sid, text, _, _ in todo if cache.get(keys[sid]) is None]
    failures: dict[str, str] = {}

    def work(item: tuple[str, str]) -> tuple[str, dict[str, Any] | None, str]:
        sid, text = item
        try:
            labels, related = split_reply(teacher.label(text))  # the 4 labels + student_related, else ValueError
            return sid, {**labels, RELEVANCE_KEY: related}, ""
        except DataError:  # unreachable endpoint etc.: stop the run
            raise
        except (TeacherError, ValueError, TypeError, KeyError) as e:
            return sid, None, str(e)[:300]

    try:
        with ThreadPoolExecutor(max_workers=max(1, getattr(teacher, "workers", 1))) as pool:
            for sid, reply, err in tqdm(pool.map(work, need), total=len(need), desc="teacher labels",
                                        unit="item", disable=len(need) < 20):
                if reply is None:
                    failures[sid] = err
                else:
                    cache.put(keys[sid], reply)
    finally:
        cache.close()

    limit = float(getattr(teacher, "max_invalid", 0.2))
    if need and len(failures) / len(need) > limit:
        first = next(iter(failures.values()))
        raise DataError(f"teacher {teacher.cache_id}: {len(failures)} of {len(need)} answers invalid "
                        f"({len(failures) / len(need):.0%}, above the {limit:.0%} limit PSY_TEACHER_MAX_INVALID); "
                        f"nothing written, the previous student set is kept ({len(need) - len(failures)} valid "
                        f"labels cached). First: {first[:160]}")
    who = teacher.describe() if hasattr(teacher, "describe") else {"id": teacher.cache_id}
    dl.acc.labelled_by = ql.acc.labelled_by = who
    kept: list[tuple[str, str, dict[str, Any], Ledger]] = []
    changes: list[dict[str, Any]] = []
    valid = Counter()
    for sid, text, lg, file in todo:
        if sid in failures:
            lg.reject(file, sid, "teacher_invalid", failures[sid])
            continue
        reply = cache.get(keys[sid])
        assert reply is not None
        labels, related = split_reply(reply)
        valid[id(lg)] += 1
        if not related:
            lg.reject(file, sid, "teacher_not_student", "the teacher says the text is not about a student: "
                      + json.dumps(labels, ensure_ascii=False))
            continue
        raised, phrase = lexicon.raise_risk(labels, text)
        if phrase:
            changes.append({"id": sid, "field": "risk_flag", "teacher": labels["risk_flag"],
                            "final": raised["risk_flag"], "phrase": phrase})
            lg.note("lexicon_raised_risk_flag")
        kept.append((sid, text, raised, lg))
    for lg in (dl, ql):
        lg.acc.steps["teacher valid"] = valid[id(lg)]
        lg.acc.steps["teacher: student_related"] = sum(k[3] is lg for k in kept)
    # run-specific, so printed rather than saved (saved accounting is identical on reruns)
    print(f"[student] teacher {teacher.cache_id}: {len(todo) - len(need)} labels from cache, {len(need)} requested, "
          f"{len(failures)} invalid -> quarantined", file=sys.stderr)

    splits = stratified_split({sid: labels[STRATIFY] for sid, _, labels, _ in kept}, seed, eval_fraction,
                              prefix="student:")
    out: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for sid, text, labels, _ in kept:
        rec = {"id": sid, "system": "", "instruction": STUDENT_INSTRUCTION, "input": text,
               "output": json.dumps(labels, ensure_ascii=False), "teacher": teacher.cache_id, RELEVANCE_KEY: True}
        out[splits[sid]].append(rec)
        if splits[sid] == "train" and labels[STRATIFY] != "none":  # copies of the risk classes (default: none)
            out["train"].extend({**rec, "id": f"{sid}#copy{k}"} for k in range(1, opts.oversample_risk))
    for lg, prefix in ((dl, "cpsycound-"), (ql, "psyqa-")):
        lg.acc.options = {"pii_scrub": opts.scrub, "reply_rule": opts.reply_rule, "stratify": STRATIFY,
                          "eval_fraction": eval_fraction, "oversample_risk": opts.oversample_risk}
        for split, recs in out.items():
            mine = [r for r in recs if r["id"].startswith(prefix)]
            lg.acc.samples[split] = len(mine)
            lg.acc.classes[split] = class_counts(mine)
        lg.acc.steps["written"] = lg.acc.written
    return TaskOutput(ctx.task, "alpaca", out, [dl, ql], extra_files={"lexicon_changes.jsonl": changes})


def class_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Samples per `risk_flag` class, every class of the schema listed (0 included)."""
    got = Counter(json.loads(r["output"])[STRATIFY] for r in records)
    return {c: got.get(c, 0) for c in student_schema().values(STRATIFY)}
