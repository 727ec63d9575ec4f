"""Synthetic PII in real dialogue context, and benign look-alikes, for measuring `data_prep.pii`.

`identifiers(n)` inserts one identifier sentence (phone, ID number, email, QQ, WeChat, name, school,
class; the spellings people use) into a real client turn from ../shared/datasets (CPsyCounD, PsyQA),
at a sentence boundary. `lookalikes(n)` inserts a benign sentence that looks like one (ages, dates,
scores, prices, honorifics such as 谢谢老师 / 心理老师, generic schools). Each case says which
substring must be gone (identifiers) or must survive verbatim (look-alikes). Deterministic per seed.
Used by tests/data_prep/test_pii.py and benchmarks/prep_bench.py.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

# Invented names from common surnames and given-name characters (test data, not used by the scrubber).
SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
            "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴")
COMPOUND = ("欧阳", "司马", "诸葛", "上官", "慕容", "东方")
GIVEN = ("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红玲梅鹏飞辉宇浩然子轩涵梓萱欣怡思远"
         "雨晨佳琪嘉懿一诺俊熙睿博文昊天泽宏志晓东雪婷颖悦琳瑶晴")
CITIES = ("北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "长沙", "郑州", "济南", "合肥",
          "福州", "昆明", "南昌", "苏州", "厦门", "青岛", "大连", "沈阳", "哈尔滨", "天津", "宁波", "无锡", "衡水", "石家庄")
REGIONS = ("华南", "华东", "华中", "西南", "东北", "西北")
NUM_ZH = "一二三四五六七八九十"


@dataclass(frozen=True)
class Case:
    kind: str  # identifier type (TYPES of data_prep.pii) or a look-alike category
    text: str  # the context with the sentence inserted
    key: str  # identifiers: must not survive; look-alikes: must survive verbatim
    sentence: str


def contexts(limit: int = 400) -> list[str]:
    """Client turns (CPsyCounD) and question descriptions (PsyQA) from the shared samples."""
    out: list[str] = []
    data = SHARED / "CPsyCoun" / "CPsyCounD" / "Data"
    for path in sorted(data.glob("case_*.txt"), key=lambda p: int(p.stem.split("_")[1]))[:limit]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("来访者：") and 20 <= len(line) <= 300:
                out.append(line[4:].strip())
                break
    for q in json.loads((SHARED / "PsyQA" / "PsyQA_example.json").read_text(encoding="utf-8")):
        if 20 <= len(q["description"]) <= 400:
            out.append(q["description"].strip())
    return out


def _insert(rng: random.Random, ctx: str, sentence: str) -> str:
    cuts = [m.end() for m in re.finditer(r"[。！？]", ctx)] or [len(ctx)]
    at = rng.choice([0, *cuts])
    return ctx[:at] + sentence + ctx[at:]


def _name(rng: random.Random) -> str:
    surname = rng.choice(COMPOUND) if rng.random() < 0.01 else rng.choice(SURNAMES)  # compound: < 0.1% of people
    return surname + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _id_number(rng: random.Random) -> str:
    body = (rng.choice(("110105", "310104", "440305", "330106", "510107", "420102")) +
            f"{rng.randint(1975, 2012)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{_digits(rng, 3)}")
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _phone(rng: random.Random) -> str:
    p = rng.choice(("13", "15", "17", "18", "19")) + _digits(rng, 9)
    style = rng.randrange(9)
    return [p, f"{p[:3]} {p[3:7]} {p[7:]}", f"{p[:3]}-{p[3:7]}-{p[7:]}", f"+86 {p}", f"+86-{p[:3]}-{p[3:7]}-{p[7:]}",
            f"(+86){p}", f"0086 {p}", f"0{rng.choice(('10', '21', '755', '571'))}-{_digits(rng, 8)}",
            f"+86{p}"][style]


def _school(rng: random.Random) -> str:
    city = rng.choice(CITIES)
    n = rng.randint(1, 12)
    zh = NUM_ZH[n - 1] if n <= 10 else "十" + NUM_ZH[n - 11]
    return rng.choice((f"{city}大学", f"{city}师范大学", f"{rng.choice(REGIONS)}师范大学", f"{city}第{zh}中学",
                       f"{city}{zh}中", f"{city}实验小学", f"{city}理工大学", f"{city}市第{zh}中学",
                       f"{city}外国语学校", f"{city}职业技术学院"))


def _identifier(rng: random.Random) -> tuple[str, str, str]:
    """(type, sentence, key that must disappear)."""
    kind = rng.choice(("phone", "id_number", "email", "qq", "wechat", "name", "name", "name", "school", "class"))
    if kind == "phone":
        p = _phone(rng)
        return kind, rng.choice(("我的手机号是{}。", "有事可以打我电话{}。", "电话：{}，随时联系。", "我妈的号码是{}。")).format(p), p
    if kind == "id_number":
        i = _id_number(rng)
        if rng.random() < 0.2:
            i = f"{i[:6]} {i[6:14]} {i[14:]}"
        return kind, rng.choice(("我的身份证号是{}。", "身份证：{}。", "登记的证件号{}，")).format(i), i
    if kind == "email":
        user = rng.choice(("xiaoming", "lily.w", "zhang_san", "stu2019", "happy-day", "cc")) + _digits(rng, rng.randint(0, 4))
        e = f"{user}@{rng.choice(('qq.com', '163.com', 'gmail.com', 'pku.edu.cn', 'outlook.com', '126.com'))}"
        return kind, rng.choice(("我的邮箱是{}。", "可以发邮件到{}，", "邮箱：{}。")).format(e), e
    if kind == "qq":
        q = str(rng.randint(10000, 9999999999))
        return kind, rng.choice(("我的QQ号是{}。", "QQ：{}。", "加我扣扣{}吧。", "Q号是{}，", "qq {}。", "我扣扣号{}。",
                                 "他的QQ是 {}。", "企鹅号{}。")).format(q), q
    if kind == "wechat":
        w = rng.choice("abcdefghjkmnpqrstuvwxyzABCDEFGH") + "".join(
            rng.choice("abcdefghijkmnpqrstuvwxyz0123456789_") for _ in range(rng.randint(5, 12)))
        return kind, rng.choice(("我的微信号是{}。", "V信 {}，", "加我vx：{}。", "wx：{}。", "微信：{}。", "我微信是{}，",
                                 "v信号{}。", "VX {}。")).format(w), w
    if kind == "name":
        n = _name(rng)
        surname = n[:2] if n[:2] in COMPOUND else n[0]
        # (sentence, what must be replaced): self-introductions, then names before titles
        forms = [(f"我叫{n}，", n), (f"我是{n}，", n), (f"我的名字叫{n}。", n), (f"大家好，我是{n}。", n),
                 (f"班主任{surname}老师说我上课不认真。", f"{surname}老师"), (f"{surname}老师让我去办公室。", f"{surname}老师"),
                 (f"{n}同学总是在背后说我。", n), (f"{surname}医生建议我来咨询。", f"{surname}医生"),
                 (f"我去找了{n}医生。", n), (f"姓名：{n}。", n), (f"我叫{n}今年十六岁。", n),
                 (f"我的同桌{n}同学成绩很好。", n)]
        sentence, target = forms[rng.randrange(len(forms))]
        return kind, sentence, target
    if kind == "school":
        s = _school(rng)
        return kind, rng.choice(("我在{}读书。", "我是{}的学生，", "我考上了{}。", "去年转到{}以后，")).format(s), s
    grade = rng.choice(("高一", "高二", "高三", "初一", "初二", "初三"))
    n = rng.randint(1, 12)
    cls = rng.choice((f"（{n}）班", f"{n}班", f"({n})班"))
    return "class", rng.choice(("我在{}{}。", "我是{}{}的，", "{}{}的同学都不理我。")).format(grade, cls), f"{grade}{cls}"


def identifiers(n: int = 400, seed: int = 14) -> list[Case]:
    rng = random.Random(seed)
    ctx = contexts()
    out: list[Case] = []
    while len(out) < n:
        kind, sentence, key = _identifier(rng)
        c = rng.choice(ctx)
        if key in c:
            continue
        out.append(Case(kind, _insert(rng, c, sentence), key, sentence))
    return out


def _lookalike(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("age", "date", "score", "price", "honorific", "honorific", "school_generic", "number", "intro"))
    if kind == "age":
        return kind, rng.choice(("我今年{}岁。", "我{}周岁了，", "他比我大{}岁。")).format(rng.randint(6, 40))
    if kind == "date":
        y, m, d = rng.randint(2000, 2025), rng.randint(1, 12), rng.randint(1, 28)
        return kind, rng.choice((f"{y}年{m}月{d}日那天，", f"{m}月{d}号要考试。", f"{y}-{m:02d}-{d:02d}开学，",
                                 f"{y}{m:02d}{d:02d}那次，", f"{y}年{m}月开始失眠。"))
    if kind == "score":
        return kind, rng.choice((f"这次考了{rng.randint(300, 720)}分。", f"数学只有{rng.randint(40, 150)}分，",
                                 f"年级排名第{rng.randint(1, 900)}名。", f"绩点3.{rng.randint(0, 99)}，",
                                 f"模考总分{rng.randint(400, 750)}，离一本线差{rng.randint(1, 60)}分。"))
    if kind == "price":
        return kind, rng.choice((f"花了{rng.randint(10, 20000)}元。", f"学费一年{rng.randint(3000, 60000)}元，",
                                 f"一次咨询{rng.randint(100, 800)}块钱，", f"生活费每月¥{rng.randint(800, 5000)}。"))
    if kind == "honorific":
        return kind, rng.choice(("谢谢老师，", "谢谢老师的耐心。", "心理老师建议我来这里。", "班主任老师找我谈话，",
                                 "数学老师很严厉。", "各位老师好，", "我向老师请教了这个问题。", "我跟同学吵架了，",
                                 "男同学都不理我。", "心理医生说我有点焦虑。", "感谢老师。", "辅导员老师让我休息，",
                                 "老师您好，", "我们老师很好。", "新来的老师很年轻。", "主治医生让我按时吃药。",
                                 "好的老师，我明白了。", "嗯嗯老师，我会试试。", "对不起老师，"))
    if kind == "school_generic":
        return kind, rng.choice(("我在一所普通大学读书。", "我上的是重点高中，", "我想考985大学。", "上大学以后，",
                                 "我是一名高中生，", "我是高二学生。", "大一新生，", "我们学校管得很严。",
                                 "初中的时候，", "研究生二年级，", "在高中的时候，", "我们班有40个人，",
                                 "我在实验班，", "每天要上班，", "周末还要加班。"))
    if kind == "number":
        return kind, rng.choice((f"跑了{rng.randint(100, 5000)}米，", f"身高{rng.randint(150, 190)}厘米，",
                                 f"晚上{rng.randint(8, 12)}点睡，", f"第{rng.randint(2, 9)}次了，",
                                 f"已经{rng.randint(2, 30)}天没睡好。", f"体重{rng.randint(40, 90)}公斤，",
                                 f"每天{rng.randint(2, 14)}个小时在学习，", f"住在{rng.randint(101, 699)}宿舍，"))
    return kind, rng.choice(("我是说我很累。", "我是不是太敏感了？", "我叫他别管我，", "我是真的不想去学校。",
                             "我是独生子女，", "我是家里的老大，", "我是个很内向的人。", "我叫了外卖，",
                             "我就是不想说话，", "微信上聊了很久。", "加了他的微信，", "他在QQ空间里说我，"))


def lookalikes(n: int = 400, seed: int = 41) -> list[Case]:
    rng = random.Random(seed)
    ctx = contexts()
    out: list[Case] = []
    while len(out) < n:
        kind, sentence = _lookalike(rng)
        out.append(Case(kind, _insert(rng, rng.choice(ctx), sentence), sentence, sentence))
    return out


def measure(n: int = 600, seed: int = 14) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Recall and false positives of `data_prep.pii.Scrubber`: (identifier type -> (removed, total),
    look-alike category -> (changed, total)) on `n` cases each."""
    from psyfactory.data_prep.pii import Scrubber

    s = Scrubber()
    found: dict[str, list[int]] = {}
    for c in identifiers(n, seed):
        v = found.setdefault(c.kind, [0, 0])
        v[0] += c.key not in s.scrub(c.text)
        v[1] += 1
    touched: dict[str, list[int]] = {}
    for c in lookalikes(n, seed + 27):
        v = touched.setdefault(c.kind, [0, 0])
        v[0] += c.key not in s.scrub(c.text)
        v[1] += 1
    return ({k: (v[0], v[1]) for k, v in sorted(found.items())}, {k: (v[0], v[1]) for k, v in sorted(touched.items())})
