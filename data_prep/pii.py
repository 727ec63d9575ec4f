"""PII scrubbing for every task: one `Scrubber`, used through `Ledger.scrub` by each parser.

Replaced (placeholder): phone numbers (`[PHONE]`: mobile with +86 / 0086 / spaces / dashes, landline
with an area code), 18-digit resident ID numbers with X (`[ID]`), student / exam numbers after
学号 / 准考证号 (`[ID]`), emails (`[EMAIL]`), URLs (`[URL]`), QQ numbers after QQ / QQ号 / 扣扣 / Q号 /
企鹅号 (`[QQ]`), WeChat ids after 微信 / 微信号 / V信 / vx / wx / 威信 / 薇信 (`[WECHAT]`), person
names (`[NAME]`) and school / class names that identify a person (`[SCHOOL]`, `[CLASS]`).

Names come from jieba's part-of-speech tagger in two contexts, so that honorifics are left alone:
- self-introductions (我叫X, 我的名字叫X, 名叫X, 姓名：X, 叫我X; 我是X only for a tagged name or a short
  surname-led clause end that is no dictionary word: not 我是高中生, 我是说);
- a name before a title (老师, 同学, 医生, 主任...): `李老师` -> `[NAME]老师`, `班主任王芳老师` ->
  `班主任[NAME]老师`, while `谢谢老师`, `心理老师`, `班主任老师`, `向老师请教` stay.
Where the tagger splits a name (`高/a 老师`, `钱/n 多多/m`), the first character decides: a surname is
a character that jieba's own tagger model (its HMM emission table) gives a high probability of
starting a person name (`nr`). No list of names is used.
Schools: a noun phrase ending in 大学 / 中学 / 小学 / 学院 / 一中... that holds a place, an organisation,
an ordinal or a word jieba does not know, besides school-type words (`北京大学`, `杭州二中`,
`合肥实验小学`: jieba tags 合肥 `n`, but knows `合肥市`); `一所普通大学`, `重点高中`, `985大学` stay.
Classes: a numbered class (`高二（3）班`, `初三5班`, `三年级二班`) keeps its grade: `高二[CLASS]`.
Ages, dates, scores, prices, grades and 400/800 hotlines are not touched (see the tests'
look-alike set). Counts per type are kept for the accounting.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache

TYPES = ("phone", "id_number", "email", "url", "qq", "wechat", "name", "school", "class")
PLACEHOLDER = {"phone": "[PHONE]", "id_number": "[ID]", "email": "[EMAIL]", "url": "[URL]", "qq": "[QQ]",
               "wechat": "[WECHAT]", "name": "[NAME]", "school": "[SCHOOL]", "class": "[CLASS]"}

_CJK = "\u4e00-\u9fff"
_D = r"[0-9０-９]"
# ------------------------------------------------------------------------- pattern identifiers
# (type, precheck, pattern, group): the pattern runs only when the cheap precheck finds something;
# `group` is the part replaced (0 = the whole match)
_DIGITS = re.compile(r"\d")
_PATTERNS: list[tuple[str, re.Pattern[str], re.Pattern[str], int]] = [
    ("email", re.compile("@"), re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), 0),
    ("url", re.compile(r"https?://|www\."), re.compile(r"(?:https?://|www\.)[^\s，。！？、；）)\]】\u4e00-\u9fff]+"), 0),
    # resident ID: 6-digit region, birth date, 3 digits, check digit (X); a space may split the blocks
    ("id_number", _DIGITS, re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}\s?(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])"
                                      r"(?:0[1-9]|[12]\d|3[01])\s?\d{3}[0-9Xx](?![0-9A-Za-z])"), 0),
    # after the words themselves any 15- or 18-character ID-shaped string is one, valid date or not
    ("id_number", re.compile("身份证|证件号"),
     re.compile(r"(?:身份证(?:号码|号)?|证件号(?:码)?)\s*(?:是|为|[:：])?\s*(\d{17}[0-9Xx]|\d{15})(?![0-9A-Za-z])"), 1),
    ("id_number", re.compile("学号|准考证号|考生号|学籍号"),
     re.compile(r"(?:学号|准考证号|考生号|学籍号)\s*(?:是|为|[:：])?\s*([A-Za-z]?\d{6,16})(?!\d)"), 1),
    # mobile: optional +86 / 0086 / (+86), 11 digits starting 13-19, blocks split by a space or dash
    ("phone", _DIGITS, re.compile(r"(?<![\d+])(?:(?:\+|00)86[\s-]?|[（(]\+?86[)）]\s?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}"
                                  r"(?!\d)"), 0),
    # landline with an area code: 010-12345678, (0755)1234567, 0571 8888 6666
    ("phone", _DIGITS, re.compile(r"(?<!\d)(?:[（(]0\d{2,3}[)）]\s?|0\d{2,3}[\s-])\d{3,4}[\s-]?\d{4}(?!\d)"), 0),
    ("qq", re.compile("[qQ]|扣扣|企鹅"), re.compile(r"(?<![A-Za-z])(?:[qQ][qQ]|扣扣|企鹅|[qQ])\s*(?:号码|号|账号)?\s*"
                                                 r"(?:是|为|[:：])?\s*(\d{5,11})(?!\d)"), 1),
    ("wechat", re.compile("[微威薇vV]信|[vVwW][xX]"),
     re.compile(r"(?<![A-Za-z])(?:[微威薇vV]信|[vVwW][xX])\s*(?:号码|号|账号|[iI][dD])?\s*(?:是|为|[:：])?\s*"
                r"([A-Za-z][-_A-Za-z0-9]{5,19}|\d{5,11})(?![-_A-Za-z0-9])"), 1),
    # in English text only with a separator: "WeChat: lily_2020", not "WeChat Moments"
    ("wechat", re.compile("(?i)wechat|weixin"),
     re.compile(r"(?i)(?<![A-Za-z])(?:wechat|weixin)\s*(?:id)?\s*[:：]\s*([A-Za-z][-_A-Za-z0-9]{5,19}|\d{5,11})"
                r"(?![-_A-Za-z0-9])"), 1),
]
# numbered classes, found from their 班: 高二（3）班, 初三5班, 三年级二班, 3班 (the grade stays); not 三班倒, 3个班
_CLASS_NUMBER = re.compile(rf"(?:[（(]\s*(?:{_D}{{1,2}}|[一二三四五六七八九十]{{1,3}})\s*[)）]|{_D}{{1,2}}|"
                           rf"[一二三四五六七八九十]{{1,3}})\s*班$")
_GRADE_BEFORE = re.compile(r"(?:[高初][一二三]|[一二三四五六七八九]年级|大[一二三四])\s*$")


def _class_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in re.finditer(r"班(?![主长级干])", text):
        head = text[max(0, m.start() - 10): m.end()]
        c = _CLASS_NUMBER.search(head)
        if c is None:
            continue
        start = m.end() - (len(head) - c.start())
        arabic = bool(re.match(rf"[（(]?\s*{_D}", c.group(0)))
        before = text[max(0, start - 6):start]
        if _GRADE_BEFORE.search(before) or (arabic and not re.search(r"\d$", before)):
            spans.append((start, m.end()))
    return spans


# ------------------------------------------------------------------------------------ names
TITLES = ("老师", "同学", "医生", "大夫", "教授", "主任", "校长", "辅导员", "导师", "先生", "女士", "小姐",
          "护士", "律师", "阿姨", "叔叔", "师傅", "班长")
_TITLE_RE = re.compile(rf"(?<=[{_CJK}])(?:{'|'.join(TITLES)})")
# self-introductions: strong (whatever name-like follows) and weak (我是X: only a tagged name)
_INTRO_RE = re.compile(r"(?:我的名字|我的姓名|名字|姓名)\s*(?:叫|是|[:：])\s*|我(?:叫|名叫)|名叫|叫我|我是|我就是|本人是?")
_STRONG_INTRO = re.compile(r"^(?:我的名字|我的姓名|名字|姓名|我叫|我名叫|名叫|叫我)")
_SENT_SPLIT = re.compile(r"[。！？!?；;，,、\n\s“”\"'‘’（）()《》【】\[\]:：…—-]")
# a school's suffix, after at least one Chinese character (the name before it is read by the tagger)
_SCHOOL_RE = re.compile(rf"(?<=[{_CJK}])(大学|学院|中学|小学|高中|初中|附中|实验学校|外国语学校|职业技术学院|"
                        rf"[一二三四五六七八九十]{{1,3}}中(?!学)|[一二三四五六七八九十]{{1,3}}小(?!学))(?![生会到习])")
# tags of words that never start or make up a name (pronouns, prepositions, conjunctions, particles...)
_FUNCTION = ("p", "c", "u", "d", "y", "e", "o", "m", "q", "f", "t", "x", "zg", "uj", "ul", "uz", "ug", "uv", "ud")
_STOP_AFTER_NAME = ("v", "p", "c", "u", "d", "y", "r", "t", "x", "f", "m", "q")
_GRADE = re.compile(r"^(?:[高初大研][一二三四]|[一二三四五六]年级)")
SURNAME_LOGP = -7.2  # log P(char | begins a person name) in jieba's posseg HMM; 李 -3.3, 高 -5.0, 新 -8.0
# school-type words: a school named only by these (重点高中, 师范大学, 外国语学校) names no school
SCHOOL_TYPE_WORDS = frozenset((
    "重点", "名牌", "普通", "一流", "双一流", "本科", "专科", "实验", "国际", "民办", "公办", "私立", "公立", "寄宿",
    "师范", "理工", "科技", "财经", "外国语", "外语", "职业", "技术", "职业技术", "农业", "工业", "医科", "医学", "商学",
    "法学", "音乐", "美术", "艺术", "体育", "附属", "省", "市", "县", "区", "省重点", "市重点", "县重点", "中心",
    "成人", "网络", "开放", "广播电视", "技工", "高等", "初级", "高级", "完全", "九年制", "十二年制", "贵族", "新",
))
STRONG_SURNAME_LOGP = -5.85  # a character tagged preposition / pronoun: 于 -5.3, 何 -5.8 yes; 那 -5.9, 向 -6.2 no
COMMON_WORD_FREQ = 100  # a dictionary word this frequent is a word, even when jieba tags it `nr` (谢谢, 高中生)


@cache
def _jieba() -> tuple[object, dict[str, float], dict[str, int]]:
    import logging

    import jieba
    import jieba.posseg as pseg
    from jieba.posseg import prob_emit

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return pseg, prob_emit.P[("B", "nr")], jieba.dt.FREQ


def is_surname(ch: str, threshold: float = SURNAME_LOGP) -> bool:
    """jieba's tagger model gives `ch` a high probability of starting a person name."""
    return _jieba()[1].get(ch, -math.inf) >= threshold


def _common_word(word: str) -> bool:
    return _jieba()[2].get(word, 0) >= COMMON_WORD_FREQ


@lru_cache(maxsize=65536)
def _tag(sentence: str) -> tuple[tuple[str, str, int], ...]:
    """(word, flag, start offset) for the sentence, from jieba.posseg."""
    out, pos = [], 0
    for w in _jieba()[0].cut(sentence):  # type: ignore[attr-defined]
        out.append((w.word, w.flag, pos))
        pos += len(w.word)
    return tuple(out)


def _function(flag: str) -> bool:
    return flag.startswith(_FUNCTION) or flag == "r"


def _dict_word(word: str) -> bool:
    """A word of jieba's dictionary (FREQ also holds every prefix, with 0)."""
    return _jieba()[2].get(word, 0) > 0


def _clause(text: str, pos: int) -> tuple[int, tuple[tuple[str, str, int], ...]]:
    """(offset, tagged tokens) of the clause around `pos` (between punctuation, at most 24 characters
    each side): the tagger sees the words around a name, and the same clause is tagged once."""
    lo = max(0, pos - 24)
    for m in _SENT_SPLIT.finditer(text, lo, pos):
        lo = m.end()
    hi_m = _SENT_SPLIT.search(text, pos, min(len(text), pos + 24))
    hi = hi_m.start() if hi_m else min(len(text), pos + 24)
    return lo, _tag(text[lo:hi])


def _starts_name(word: str, flag: str) -> bool:
    """The token can be the first of a name: tagged a person name, or begins with a surname and is no
    function word (高/a 老师, 钱/n 多多/m, 欧阳/ns 娜娜/nrt)."""
    if _GRADE.match(word):
        return False
    if flag.startswith("nr"):
        return True
    return is_surname(word[0]) and not _function(flag) and not flag.startswith("v")


def _valid_name(span: str, tokens: int, first_flag: str, strong: bool = False) -> bool:
    if not 1 <= len(span) <= 4 or _GRADE.match(span) or re.search(r"[一二三四五六七八九十]{2}|[0-9]", span):
        return False
    if tokens == 1 and len(span) > 1 and not strong:  # one token: a dictionary word is a word unless tagged a rare name
        return (first_flag.startswith("nr") and not _common_word(span)) or not _dict_word(span)
    return True


def _extend(toks: tuple[tuple[str, str, int], ...], i: int, limit: int) -> int:
    """Index after the last token of the name that starts at token i (a given name the tagger split into
    single characters or a surname-led chunk: 司马/nr 磊/nr 强/a, 钱/n 多多/m)."""
    size, j = len(toks[i][0]), i + 1
    while j < len(toks):
        w, f, _ = toks[j]
        numeral = bool(re.search(r"[一二三四五六七八九十0-9]", w))
        if f.startswith(_STOP_AFTER_NAME) and not (f == "m" and not numeral):
            break
        if len(w) > 1 and len(toks[i][0]) > 1 and not (f.startswith("nr") and toks[i][1].startswith("nr")) \
                or size + len(w) > limit:
            break
        size, j = size + len(w), j + 1
    return j


def _names_before_titles(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _TITLE_RE.finditer(text):
        lo, toks = _clause(text, m.start())
        t_at = m.start() - lo
        k = next((i for i, (w, _, s) in enumerate(toks) if s <= t_at < s + len(w)), None)
        if k is None:
            continue
        word, flag, start = toks[k]
        if start < t_at:  # the title is inside a longer token: 李老师/nr (a name), 数学老师/n (not)
            if start + len(word) == t_at + len(m.group(0)) and flag.startswith("nr") and t_at - start <= 3:
                spans.append((lo + start, m.start()))
            continue
        best = None
        for j in range(k - 1, max(-1, k - 4), -1):  # the longest name that ends at the title
            w, f, s = toks[j]
            size = t_at - s
            if size > (4 if j < k - 1 and len(w) == 2 else 3):
                break
            between = toks[j + 1:k]  # a given name the tagger split off: 秦/nr 平平/a, 宋玉/nr 一/m
            if any((len(bw) == 1 and bf.startswith(("p", "c", "u", "y", "r")))
                   or (len(bw) > 1 and (len(w) > 1 or _function(bf))) for bw, bf, _ in between):
                break
            if j > 0 and len(w) == 1 and f == "ng" and any(_dict_word(toks[j - 1][0][-n:] + w) for n in (1, 2, 3)):
                break  # a bound morpheme ending the word before it: 心理咨询/nz 师/ng 教授 (咨询师)
            if len(w) == 1:  # 高/a 老师, 许/m 老师, 曾/d 老师; not 向/p 老师, 小老师 (a prefix, not a name)
                ok = w not in "小老大" and (f.startswith("nr") or (is_surname(w) and not f.startswith(("c", "u", "y")) and (
                    not f.startswith(("p", "r")) or is_surname(w, STRONG_SURNAME_LOGP))))  # 于老师 yes, 向老师请教 no
            else:  # a common word does not start a name: 谢谢/nr 田/nr 老师 -> 谢谢[NAME]老师
                ok = _starts_name(w, f) and (j == k - 1 or not _common_word(w))
            if ok and _valid_name(text[lo + s:m.start()], k - j, f):
                best = s
        if best is not None:
            spans.append((lo + best, m.start()))
    return spans


def _name_after_intro(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start = m.end()
    if start >= len(text) or not re.match(rf"[{_CJK}]", text[start]):
        return None
    lo, toks = _clause(text, start)
    i = next((n for n, (_, _, s) in enumerate(toks) if lo + s == start), None)
    if i is None:  # the tagger joined the trigger with the name (叫付/v 飞强/v): tag what follows it
        hi = lo + toks[-1][2] + len(toks[-1][0])
        lo, toks, i = start, _tag(text[start:hi]), 0
    strong = bool(_STRONG_INTRO.match(m.group(0)))
    w0, f0, s0 = toks[i]
    if w0 in ("小", "老") and i + 1 < len(toks) and len(toks[i + 1][0]) == 1 and is_surname(toks[i + 1][0]):
        end_tok = i + 2  # 小王, 老李
    elif not (_starts_name(w0, f0) or (strong and (not _function(f0) or len(w0) == 1 and is_surname(w0)) and
                                      not f0.startswith(("v", "p", "c", "u", "y", "r")))):
        return None
    else:
        end_tok = _extend(toks, i, 4 if len(w0) == 2 and (is_surname(w0[0]) or f0.startswith("nr")) else 3)
        rest = toks[i:]
        chunk = "".join(w for w, _, _ in rest)
        if strong and 2 <= len(chunk) <= 4 and not _GRADE.match(chunk):
            end_tok = len(toks)  # 我叫李想。 我的名字叫曾红洋。: the short rest of the clause is the name
    span_end = lo + (toks[end_tok - 1][2] + len(toks[end_tok - 1][0]))
    name = text[start:span_end]
    if len(name) < 2 or not _valid_name(name, end_tok - i, f0, strong):
        return None
    if not strong:  # 我是X: a tagged name, or a short clause end of single characters led by a surname
        rest = toks[i:]
        chunk = "".join(w for w, _, _ in rest)
        if (2 <= len(chunk) <= 3 and is_surname(chunk[0]) and not re.search(r"[一二三四五六七八九十0-9]", chunk)
                and all(len(w) == 1 or (f.startswith("nr") and not _common_word(w)) or not _dict_word(w)
                        for w, f, _ in rest)):
            return start, start + len(chunk)
        if not (f0.startswith("nr") or (not _dict_word(name) and f0.startswith(("ns", "nr", "nz", "n", "g", "j")))):
            return None
        if end_tok < len(toks) and not toks[end_tok][1].startswith(_STOP_AFTER_NAME):
            return None
    return start, span_end


def _school_spans(text: str) -> list[tuple[int, int]]:
    """Named schools: the noun phrase before 大学 / 中学 / 学院 / 学校... (tagged nouns, places, names,
    ordinals, read back from the suffix) holds a word that is not a school-type word (`SCHOOL_TYPE_WORDS`):
    合肥/n 实验/vn 小学, 北京大学/nt, 第七/m 中学; not 一所/m 普通/nz 大学, 重点高中/l, 985/m 大学, 我们/r 学校."""
    spans = []
    for m in _SCHOOL_RE.finditer(text):
        lo, toks = _clause(text, m.start(1))
        end = m.end(1) - lo
        k = next((i for i, (w, _, s) in enumerate(toks) if s < end <= s + len(w)), None)
        if k is None or toks[k][2] + len(toks[k][0]) != end:
            continue
        word, flag, start = toks[k]
        suffix_at = m.start(1) - lo
        first = None  # the earliest proper word of the noun phrase
        if start < suffix_at:  # the suffix ends a longer token: 北京大学/nt, 重点高中/l
            head = word[: suffix_at - start]
            if head not in SCHOOL_TYPE_WORDS and (flag.startswith(("nt", "ns", "nr", "nz")) or (
                    len(head) >= 2 and not _dict_word(head) and not flag.startswith(("l", "i")))):
                first = start
        for j in range(k - 1, -1, -1):
            w, f, s = toks[j]
            ordinal = bool(re.fullmatch(r"第?[一二三四五六七八九十0-9]{1,3}", w))
            city = len(w) >= 2 and _dict_word(w + "市")  # 合肥/n, 大连/d: the tagger misses the city, its 市 not
            if not (ordinal or city or f.startswith(("n", "vn", "j", "g")) or w in SCHOOL_TYPE_WORDS):
                break
            if w in SCHOOL_TYPE_WORDS:
                continue
            if ordinal or city or f.startswith(("ns", "nt", "nr", "nz", "j")) or (len(w) >= 2 and not _dict_word(w)):
                first = s  # a place, organisation, name, ordinal or a word jieba does not know (育才...)
        if first is not None:
            spans.append((lo + first, m.end(1)))
    return spans


# --------------------------------------------------------------------------------- scrubber
@dataclass
class Scrubber:
    """Replace identifiers in text; `counts` per type (see TYPES). `enabled=False` passes text through."""

    enabled: bool = True
    counts: Counter = field(default_factory=Counter)

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, type) spans to replace, in text order."""
        spans: list[tuple[int, int, str]] = []
        taken: list[tuple[int, int]] = []

        def add(s: int, e: int, kind: str) -> None:
            if e > s and not any(s < te and ts < e for ts, te in taken):
                spans.append((s, e, kind))
                taken.append((s, e))

        for kind, precheck, pat, group in _PATTERNS:
            if precheck.search(text):
                for m in pat.finditer(text):
                    add(m.start(group), m.end(group), kind)
        if re.search(rf"[{_CJK}]", text):
            for s, e in _names_before_titles(text):
                add(s, e, "name")
            for m in _INTRO_RE.finditer(text):
                if (span := _name_after_intro(text, m)) is not None:
                    add(*span, "name")
            for s, e in _school_spans(text):
                add(s, e, "school")
            for s, e in _class_spans(text):
                add(s, e, "class")
        return sorted(spans)

    def scrub(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        spans = self.find(text)
        if not spans:
            return text
        out, pos = [], 0
        for s, e, kind in spans:
            out.append(text[pos:s])
            out.append(PLACEHOLDER[kind])
            pos = e
            self.counts[kind] += 1
        out.append(text[pos:])
        return "".join(out)
