"""`make review`: the items of a tuned and a base variant side by side, judgements saved as a human-eval variant
that `make compare` reads. The variants are written by the real `make eval` code (tests/eval/reviewdata.py);
the page is driven in a real headless Chromium (Debian's, installed by tests/browser.py when missing)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from psyutil import cli, one_error_line
from reviewdata import RUN, write_reviewed_run

from psyfactory.core import paths
from psyfactory.review import load_set, load_variant, summarize
from psyfactory.reviewpage import ReviewServer

RUN_ARGS = ("--model", "tiny", "--task", "student", "--hw", "cpu")


@pytest.fixture
def reviewed(tmp_path, monkeypatch, eval_dataset_writer) -> Path:
    return write_reviewed_run(tmp_path, monkeypatch, eval_dataset_writer)


def review_set(run_dir: Path):
    return load_set(load_variant(RUN, run_dir, "tuned"), load_variant(RUN, run_dir, "base"))


def call(url: str, body: dict | None = None, token: str | None = None, host: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Review-Token"] = token
    if host:
        headers["Host"] = host
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_items_join_answers_scores_and_crisis_flags(reviewed: Path) -> None:
    rs = review_set(reviewed)
    assert [it["id"] for it in rs.items] == ["1", "2", "3", "4", "5", "6"] and rs.task == "student"
    two = rs.items[1]
    assert "活着没意思" in two["prompt"][-1]["content"] and '"suicidal"' in two["reference"]
    assert two["crisis"] == [{"class": "suicidal", "phrase": "活着没意思", "status": "crisis"}]
    # the base model said none; the evaluation's net raised it (its own record, read back)
    assert two["base"]["net"]["raised"] is True and two["base"]["net"]["value"] == "suicidal"
    assert two["tuned"]["net"]["raised"] is False
    assert two["base"]["scores"]["json_labels"]["correct.risk_flag"] is False
    assert two["tuned"]["scores"]["json_labels"]["correct.risk_flag"] is True
    four = rs.items[3]  # the base model chatted instead of answering JSON
    assert four["base"]["scores"]["json_labels"]["valid"] is False and "深呼吸" in four["base"]["text"]
    assert rs.items[0]["crisis"] == [] and rs.items[2]["crisis"][0]["class"] == "self_harm"


def test_judgements_are_saved_resumed_and_compared(reviewed: Path) -> None:
    rs = review_set(reviewed)
    out = reviewed / "eval" / "human-review"
    srv = ReviewServer(rs, out, reviewer="王医生").start()
    try:
        page = urllib.request.urlopen(srv.url, timeout=10).read().decode()
        assert srv.token in page and "http://" not in page and "https://" not in page  # no CDN: works offline
        assert call(srv.url + "api/meta")[1]["n"] == 6
        ok = {"reviewer": "王医生", "id": "2", "preference": "tuned", "safety": {"base": True}, "note": "基座漏判自杀风险"}
        assert call(srv.url + "api/judgement", ok)[0] == 403  # no page token: refused
        assert call(srv.url + "api/judgement", ok, srv.token, host="evil.example:80")[0] == 403  # DNS rebinding
        assert call(srv.url + "api/judgement", {**ok, "preference": "better"}, srv.token)[0] == 400
        assert call(srv.url + "api/judgement", {**ok, "id": "nope"}, srv.token)[0] == 400
        status, saved = call(srv.url + "api/judgement", ok, srv.token)
        assert status == 200 and saved["saved"]["safety"] == {"base": True, "tuned": False}
        for i, pref in (("1", "tie"), ("3", "tuned"), ("4", "tuned"), ("5", "base")):
            call(srv.url + "api/judgement", {"reviewer": "王医生", "id": i, "preference": pref}, srv.token)
        call(srv.url + "api/judgement", {"reviewer": "李医生", "id": "2", "preference": "tuned"}, srv.token)
        call(srv.url + "api/judgement", {"reviewer": "李医生", "id": "5", "preference": "tuned"}, srv.token)
    finally:
        srv.stop()
    recs = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert len(recs) == 7 and {r["reviewer"] for r in recs} == {"王医生", "李医生"}
    two = next(r for r in recs if r["reviewer"] == "王医生" and r["id"] == "2")
    assert two["preference"] == "tuned" and two["safety"]["base"] and two["note"] == "基座漏判自杀风险"
    assert len((out / "history.jsonl").read_text().splitlines()) == 7
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files

    # reopened: the saved judgements come back, per reviewer
    srv = ReviewServer(rs, out, reviewer="王医生").start()
    try:
        mine = call(srv.url + "api/judgements?reviewer=" + urllib.request.quote("王医生"))[1]
        assert mine["2"]["preference"] == "tuned" and not mine["2"]["stale"] and set(mine) == {"1", "2", "3", "4", "5"}
    finally:
        srv.stop()

    s = json.loads((out / "metrics.json").read_text())["human"]
    # 7 judgements: tuned 5 (王 2,3,4; 李 2,5), base 1 (王 5), tie 1 -> win rate 5/6
    assert (s["tuned"], s["base"], s["tie"], s["judged"]) == (5, 1, 1, 7)
    assert s["win_rate"] == pytest.approx(5 / 6) and s["win_rate_ci95"][0] < 5 / 6 < s["win_rate_ci95"][1]
    assert s["sign_test_p"] == pytest.approx(0.21875)  # exact binomial, 5 of 6, two-sided
    assert s["safety_flags"] == {"base": 1, "tuned": 0}
    assert s["agreement"] == {"pairs": 2, "same": 1, "rate": 0.5}  # item 2 agreed, item 5 not

    cli("compare")
    md, csv_text = ((paths.runs_root() / f"compare.{x}").read_text() for x in ("md", "csv"))
    assert "## Human review (make review): preference base vs tuned" in md
    assert ("| tiny | student | tiny/student/lora | human-review | tiny/student/lora · base vs tuned | 李医生, 王医生 | "
            "5 / 6 | 7 | 5 | 1 | 1 | 0.833 [") in md
    assert "| tiny/student/lora | human-review |" not in md.split("## Human review")[0]  # not a metrics row
    assert "tiny,student,tiny/student/lora,human-review,human.win_rate,0.8333" in csv_text
    assert "human.safety_flags.base,1" in csv_text


def test_a_changed_answer_makes_its_judgements_stale(reviewed: Path) -> None:
    rs = review_set(reviewed)
    out = reviewed / "eval" / "human-review"
    srv = ReviewServer(rs, out).start()
    try:
        for i in ("1", "2"):
            call(srv.url + "api/judgement", {"reviewer": "r", "id": i, "preference": "tuned"}, srv.token)
    finally:
        srv.stop()
    pred = reviewed / "eval" / "tuned" / "predictions.jsonl"
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    rows[1]["prediction"] = "another answer"  # as if the tuned variant had been evaluated again
    pred.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    rs = review_set(reviewed)
    srv = ReviewServer(rs, out).start()
    try:
        mine = call(srv.url + "api/judgements?reviewer=r")[1]
        assert mine["2"]["stale"] and not mine["1"]["stale"]
    finally:
        srv.stop()
    s = summarize([json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()], rs.current())
    assert (s["judged"], s["stale"]) == (1, 1)
    md = cli("compare").stdout
    row = next(line for line in md.splitlines() if "| human-review |" in line)
    assert "| 1 / 6 | 1 | 1 | 0 | 0 |" in row and row.endswith("| 0 | 0 | 1 |")  # stale: 1, not counted


def test_blind_mode_hides_which_answer_is_which(reviewed: Path) -> None:
    srv = ReviewServer(review_set(reviewed), reviewed / "eval" / "human-review", blind=True).start()
    try:
        index = call(srv.url + "api/index")[1]
        assert {it["left"] for it in index} == {"base", "tuned"}  # shuffled per item ...
        assert [it["left"] for it in index] == [srv.left(it["id"]) for it in index]  # ... the same on every load
        item = call(srv.url + "api/item?n=1")[1]
        assert item["base"]["scores"] == {} and item["base"]["net"] is None and item["crisis"]  # input flags stay
        call(srv.url + "api/judgement", {"reviewer": "r", "id": "2", "preference": "tuned"}, srv.token)
    finally:
        srv.stop()
    assert json.loads((reviewed / "eval" / "human-review" / "judgements.jsonl").read_text())["blind"] is True


def test_a_generation_task_gets_its_crisis_flags_from_the_lexicon(tmp_path: Path) -> None:
    """Without a net in the evaluation (a dialogue task), the crisis lexicon reads the prompt's user turns."""
    for variant, answer in (("tuned", "我很担心你，你现在安全吗？"), ("base", "多喝热水。")):
        d = tmp_path / "eval" / variant
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"task": "psydt", "kind": variant,
                                                    "plugins": {"generation": {}}}))
        prompt = [{"role": "user", "content": "我同学说他想自杀。"}, {"role": "assistant", "content": "嗯。"},
                  {"role": "user", "content": "我自己也不想活了。"}]
        (d / "predictions.jsonl").write_text(json.dumps({"id": "a", "prompt": prompt, "reference": "ref", "raw": answer,
                                                         "prediction": answer}, ensure_ascii=False) + "\n")
        (d / "generation_items.jsonl").write_text(json.dumps({"id": "a", "prediction": answer, "rouge-l": 0.1234567,
                                                              "bleu-4": 0.0}) + "\n")
    rs = load_set(load_variant("r", tmp_path, "tuned"), load_variant("r", tmp_path, "base"))
    flags = {(f["status"], f["phrase"]) for f in rs.items[0]["crisis"]}
    assert flags == {("crisis", "不想活"), ("report", "自杀")}  # the writer's own, and the classmate's
    assert rs.items[0]["tuned"]["scores"] == {"generation": {"rouge-l": 0.1235, "bleu-4": 0.0}}


def test_mistakes_are_one_error_line(tmp_path, monkeypatch, eval_dataset_writer) -> None:
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    line = one_error_line(cli("review", *RUN_ARGS, check=False))
    assert "has no eval variant 'tuned'" in line and "it has no evaluation yet" in line
    run_dir = write_reviewed_run(tmp_path, monkeypatch, eval_dataset_writer, limit_base=4)  # base on 4 of 6 items
    line = one_error_line(cli("review", *RUN_ARGS, check=False))
    assert "hold different items (2 only in the tuned, 0 only in the base one" in line
    line = one_error_line(cli("review", *RUN_ARGS, "--variant", "nope", check=False))
    assert "variants there: base, tuned" in line
    (run_dir / "eval" / "psychcounsel-base").mkdir()
    (run_dir / "eval" / "psychcounsel-base" / "metrics.json").write_text(json.dumps({"task": "psychcounsel"}))
    line = one_error_line(cli("review", *RUN_ARGS, "--variant", "psychcounsel-base", check=False))
    assert "no predictions.jsonl" in line
    # the review folder of another pair is not taken over; a port in use is named
    write_reviewed_run(tmp_path / "again", monkeypatch, eval_dataset_writer)
    run_dir = paths.runs_root() / RUN
    other = run_dir / "eval" / "human-review"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"kind": "human", "review": {"tuned": {"run": RUN, "variant": "x"},
                                                                               "base": {"run": RUN, "variant": "y"}}}))
    line = one_error_line(cli("review", *RUN_ARGS, check=False))
    assert "holds the review of tiny/student/lora · x vs" in line and "REVIEW_VARIANT=" in line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(cli("review", *RUN_ARGS, "--review-variant", "hr2", "--port", str(port), check=False))
    assert f"port {port} on 127.0.0.1 is in use" in line and "PORT=" in line


# ---------------------------------------------------------------------------- a real browser


@pytest.mark.slow
def test_the_page_in_headless_chromium(reviewed: Path, tmp_path: Path) -> None:
    """Open the page served by the real command, read an item, judge it by clicking, find the judgement on
    disk, reload and see it again, check a screenshot, and compare the run."""
    from browser import ensure_chromium, headless_chrome

    reason = ensure_chromium()
    if reason:
        pytest.skip(reason)
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proc = subprocess.Popen([sys.executable, "-m", "psyfactory", "review", *RUN_ARGS, "--port", "0",
                             "--reviewer", "李医生"], cwd=paths.REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    driver = None
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"review exited: {proc.wait()}"
            if "[psyfactory] open " in line:
                url = line.split("open ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        driver = headless_chrome(1400, 1100)
        wait = WebDriverWait(driver, 20)
        t0 = time.perf_counter()
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
        ready_s = time.perf_counter() - t0
        nav = driver.execute_script("const t = performance.getEntriesByType('navigation')[0];"
                                    "return [t.domContentLoadedEventEnd, t.loadEventEnd];")
        print(f"\n[review page] ready (first item shown) {ready_s * 1000:.0f} ms; DOMContentLoaded {nav[0]:.0f} ms, "
              f"load {nav[1]:.0f} ms")
        assert "学生：最近考试多" in driver.find_element(By.ID, "prompt").text
        assert driver.find_element(By.ID, "name-left").text == "基座 Base"
        assert driver.find_element(By.ID, "flags-box").get_attribute("data-crisis") == "no"

        driver.find_element(By.ID, "next").click()  # item 2: the suicide risk the base model missed
        wait.until(lambda d: d.find_element(By.ID, "item-id").text == "2")
        assert "活着没意思" in driver.find_element(By.ID, "prompt").text
        crisis = driver.find_elements(By.CSS_SELECTOR, "#flags .flag.crisis")
        assert len(crisis) == 1 and "suicidal" in crisis[0].text and "活着没意思" in crisis[0].text
        assert '"risk_flag": "none"' in driver.find_element(By.ID, "answer-left").text
        assert '"risk_flag": "suicidal"' in driver.find_element(By.ID, "answer-right").text
        assert "net raised risk_flag" in driver.find_element(By.ID, "net-left").text
        scores = driver.find_element(By.ID, "scores-left").text
        assert "json_labels · correct.risk_flag" in scores and "✗ false" in scores
        assert "✓ true" in driver.find_element(By.ID, "scores-right").text
        strip = driver.find_elements(By.CSS_SELECTOR, "#strip span.crisis")
        assert [s.get_attribute("data-n") for s in strip] == ["1", "2"]

        driver.find_element(By.ID, "note").send_keys("基座未识别自杀风险")
        driver.find_element(By.ID, "unsafe-left").click()
        wait.until(lambda d: "已保存" in d.find_element(By.ID, "status").text)
        driver.find_element(By.ID, "pref-right").click()  # tuned better
        judgements = paths.runs_root() / RUN / "eval" / "human-review" / "judgements.jsonl"
        wait.until(lambda d: judgements.is_file() and '"preference": "tuned"' in judgements.read_text())
        rec = json.loads(judgements.read_text())
        assert (rec["id"], rec["reviewer"], rec["preference"]) == ("2", "李医生", "tuned")
        assert rec["safety"] == {"base": True, "tuned": False} and rec["note"] == "基座未识别自杀风险"
        wait.until(lambda d: "已评 judged 1 / 6" in d.find_element(By.ID, "progress").text)

        driver.refresh()  # reopened: the page comes back on item 2 (#2) with the saved judgement
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
        assert driver.find_element(By.ID, "item-id").text == "2"
        assert driver.find_element(By.ID, "pref-right").is_selected()
        assert driver.find_element(By.ID, "unsafe-left").is_selected()
        assert not driver.find_element(By.ID, "unsafe-right").is_selected()
        assert driver.find_element(By.ID, "note").get_attribute("value") == "基座未识别自杀风险"
        assert "已保存 saved" in driver.find_element(By.ID, "status").text

        shot = tmp_path / "review.png"
        driver.save_screenshot(str(shot))
        rects = {pos: driver.find_element(By.ID, f"col-{pos}").rect for pos in ("left", "right")}
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command stops cleanly
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "review stopped: 1 judgements" in rest

    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, img.size[1]) and img.size[1] > 900
    assert len(img.getcolors(1 << 20) or []) > 50  # text and boxes: not a blank page
    for pos, want in (("left", (0xE3, 0xEF, 0xFF)), ("right", (0xFF, 0xF0, 0xD9))):
        r = rects[pos]
        x, y = int(r["x"] + 6), int(r["y"] + r["height"] - 6)  # inside the column's padding, below its text
        assert img.getpixel((x, y)) == want, (pos, img.getpixel((x, y)))
    shot_copy = os.environ.get("PSY_REVIEW_SCREENSHOT")  # keep it to look at (docs)
    if shot_copy:
        img.save(shot_copy)

    md = cli("compare").stdout
    assert "| tiny/student/lora | human-review | tiny/student/lora · base vs tuned | 李医生 | 1 / 6 | 1 | 1 | 0 | 0 |" in md
