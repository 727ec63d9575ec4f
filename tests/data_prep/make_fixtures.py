"""Writes tests/data_prep/fixtures/bad: malformed raw files (invented text) in the real layout."""

import json
import shutil
from pathlib import Path

root = Path(__file__).resolve().parent / "fixtures" / "bad"

if root.exists():
    shutil.rmtree(root)


def w(rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)

ok_ans = [{"answer_text": "先照顾好自己的睡眠，再一点点安排复习计划，你已经做得很好了。", "has_label": True,
           "labels_sequence": [{"start": 0, "end": 10, "type": "Direct Guidance"}]}]
recs = [
    {"question": "考试前总是失眠", "description": "我是高二学生。", "keywords": "学业,焦虑", "answers": ok_ans, "questionID": 1},
    {"question": "关键词是列表", "description": "", "keywords": ["学业"], "answers": ok_ans, "questionID": 2},
    {"question": "没有编号", "description": "", "keywords": "x", "answers": ok_ans},
    {"question": "没有回答", "description": "", "keywords": "x", "answers": [], "questionID": 4},
    {"question": "   ", "description": "", "keywords": "x", "answers": ok_ans, "questionID": 5},
    {"question": "考试前总是失眠", "description": "我是高二学生。", "keywords": "学业", "answers": ok_ans, "questionID": 6},
    {"question": "重复编号", "description": "", "keywords": "x", "answers": ok_ans, "questionID": 1},
    {"question": "最后一条被截断", "description": "文件在这里断开", "keywords": "x", "answers": ok_ans, "questionID": 8},
]
text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n]\n"
text = text[: text.rindex("文件在这里断开") + 4]  # truncated inside the last record
w("PsyQA/PsyQA_example.json", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))

# emotion: CRLF, GBK line, no ';', unknown label, empty line, empty text
lines = [b"i feel calm today;joy", "我很难过;sadness".encode("gbk"), b"no separator here", b"i feel odd;confused",
         b"", b";anger", b"i feel calm today;joy", b"i feel ok; really;joy"]
w("emotion/train.txt", b"\r\n".join(lines) + b"\r\n")
w("emotion/val.txt", b"i feel fine;joy\n")
w("emotion/test.txt", b"i feel fine;joy\ni feel sad;sadness\n")

# CPsyCounD
w("CPsyCoun/CPsyCounD/Data/case_0.txt", "来访者：我最近学习压力很大。\r\n\r\n心理咨询师：能具体说说吗？".encode())
w("CPsyCoun/CPsyCounD/Data/case_1.txt", "来访者：我考试没考好。\n\n心理咨询师：没关系。".encode("gbk"))
w("CPsyCoun/CPsyCounD/Data/case_2.txt", b"")
w("CPsyCoun/CPsyCounD/Data/case_3.txt", "标题：一次咨询\n\n来访者：你好。\n\n心理咨询师：你好。".encode())
w("CPsyCoun/CPsyCounD/Data/case_4.txt", b"\xef\xbb\xbf" + "来访者：我睡不着。\n\n来访者：总在想考试。\n\n心理咨询师：我们一起看看。".encode())
w("CPsyCoun/CPsyCounD/Data/case_5.txt", "心理咨询师：你好，请坐。".encode())
w("CPsyCoun/CPsyCounD/Data/case_6.txt", "来访者：我最近学习压力很大。\n\n心理咨询师：能具体说说吗？".encode())  # dup of 0 after CRLF

# CPsyCounE
w("CPsyCoun/CPsyCounE/Education/1.json", json.dumps(["求助者：我怕考试。", "支持者：说说看？"], ensure_ascii=False)[:-6].encode())
w("CPsyCoun/CPsyCounE/Education/2.json", json.dumps(["来访者：前缀不对。", "支持者：嗯。"], ensure_ascii=False).encode())
w("CPsyCoun/CPsyCounE/Career/1.json", json.dumps(["求助者：我想换工作。", "支持者：是什么让你这样想？", "求助者：太累了。"], ensure_ascii=False).encode())
w("CPsyCoun/CPsyCounE/Career/2.json", json.dumps({"not": "a list"}).encode())

# PsyDT
sysm = {"role": "system", "content": "你是一位心理咨询师。"}
dl = [
    {"id": 0, "normalizedTag": "学业", "messages": [sysm, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好，请说。"}]},
    {"id": 1, "normalizedTag": "学业", "messages": [sysm, {"role": "client", "content": "你好"}, {"role": "assistant", "content": "你好"}]},
    {"id": 2, "normalizedTag": "学业", "messages": [sysm, {"role": "user", "content": ""}, {"role": "assistant", "content": "你好"}]},
    {"id": 3, "normalizedTag": "学业", "messages": [sysm, {"role": "assistant", "content": "你好"}, {"role": "user", "content": "嗯"}]},
    {"id": 4, "normalizedTag": "学业", "messages": "not a list"},
    {"id": 5, "normalizedTag": "学业", "messages": [sysm, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好，请说。"}]},
    {"id": 6, "normalizedTag": "学业", "messages": [sysm, {"role": "user", "content": 42}, {"role": "assistant", "content": "好"}]},
]
w("PsyDTCorpus/PsyDTCorpus_train_mulit_turn_packing.json", json.dumps(dl, ensure_ascii=False, indent=4).encode())

# LongEmotion: truncated line, wrong type, missing field, empty list, good line
good = {"id": 1, "case_description": ["A student feels stressed."], "consultation_process": ["Two sessions."],
        "experience_and_reflection": "Support helped."}
le = [json.dumps(good), json.dumps({**good, "id": 2})[:40], json.dumps({**good, "id": 3, "case_description": 7}),
      json.dumps({k: v for k, v in {**good, "id": 4}.items() if k != "experience_and_reflection"}),
      json.dumps({**good, "id": 5, "consultation_process": []}), json.dumps({**good, "id": 6})]
w("LongEmotion/Emotion_Summary_origin.jsonl", ("\n".join(le) + "\n").encode())
w("README.md", b"Malformed raw files for tests (invented text). Written by tests/data_prep/make_fixtures.py.\n")
