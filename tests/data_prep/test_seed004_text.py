"""Seed 004's training text (recipe seed004-psydt): the recipe's own data render each dialogue as its author's
train.py does (format_conversation: plain ChatML per message, system included; written out here by hand from
the seed README's code, not taken from data_prep), unscrubbed; LLaMA-Factory, with the recipe's keys, keeps the
first 384 tokens the author's tokenizer call keeps, and the labels cover every token but padding, as the
author's collator (DataCollatorForLanguageModeling, mlm=False) does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psyfactory.core.paths import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "datasets"
EXAMPLE = SHARED / "PsyDTCorpus" / "PsyDTCorpus_README_example.json"
RECIPE = "seed004-psydt"


def format_conversation(messages: list[dict[str, str]]) -> str:
    """The seed's format_conversation (its README, 数据格式处理), role by role."""
    text = ""
    for msg in messages:
        if msg["role"] == "system":
            text += f"<|im_start|>system\n{msg['content']}<|im_end|>\n"
        elif msg["role"] == "user":
            text += f"<|im_start|>user\n{msg['content']}<|im_end|>\n"
        elif msg["role"] == "assistant":
            text += f"<|im_start|>assistant\n{msg['content']}<|im_end|>\n"
    return text


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not EXAMPLE.is_file():
        pytest.skip(f"the PsyDTCorpus example is not at {EXAMPLE}")
    from psyfactory.prep import prepare_recipe

    ds = tmp_path_factory.mktemp("seed004_text")
    prepare_recipe(RECIPE, SHARED, ds, quiet=True)
    return ds


def test_the_recipes_own_data_are_the_authors_text_unscrubbed(prepared: Path) -> None:
    raw = json.loads(EXAMPLE.read_text(encoding="utf-8"))[0]
    rows = [json.loads(x) for x in (prepared / "data" / RECIPE / "train_text.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1 and rows[0]["output"] == ""
    assert rows[0]["text"] == format_conversation(raw["messages"])
    assert rows[0]["text"].startswith("<|im_start|>system\n" + raw["messages"][0]["content"] + "<|im_end|>\n<|im_start|>user\n")
    info = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
    assert info[f"{RECIPE}_train_text"] == {"file_name": f"data/{RECIPE}/train_text.jsonl",
                                            "columns": {"prompt": "text", "response": "output"}}
    assert {f"{RECIPE}_train", f"{RECIPE}_eval", f"{RECIPE}_eval_text"} <= set(info)
    accounting = json.loads((prepared / "data" / RECIPE / "accounting.json").read_text(encoding="utf-8"))
    assert all(a["pii_scrub"] is False for a in accounting)  # the seed trained on the corpus as released


@pytest.mark.slow
def test_llamafactory_trains_on_every_token_of_the_first_384(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    from transformers import DataCollatorForLanguageModeling

    from psyfactory.config import compose
    from psyfactory.tiny import ensure_tiny

    monkeypatch.setenv("PSY_DATASET_DIR", str(prepared))
    tiny = ensure_tiny()  # a ChatML tokenizer whose pad (<|endoftext|>) is not its eos, as Qwen3's
    c = compose("tiny", "psydt", "lora", "cpu", ["fp16=false", "dataloader_num_workers=0"], run="t", recipe=RECIPE)
    assert (c.lf["template"], c.lf["train_on_prompt"], c.lf["cutoff_len"]) == ("empty", True, 384)
    args = {k: v for k, v in c.lf.items() if k not in ("enable_thinking",)}
    args.update(model_name_or_path=str(tiny), output_dir=str(prepared / "_out"), eval_dataset=None,
                eval_strategy="no", load_best_model_at_end=False)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    tok = tm["tokenizer"]
    template = get_template_and_fix_tokenizer(tok, data_args)
    ds = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)["train_dataset"]
    text = json.loads((prepared / "data" / RECIPE / "train_text.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    authors = tok(text, truncation=True, max_length=384)["input_ids"]  # train.py's tokenizer call, unpadded
    assert len(tok(text)["input_ids"]) > 384  # the example dialogue is longer: the window is its beginning
    ex = ds[0]
    assert ex["input_ids"] == authors and len(ex["input_ids"]) == 384
    assert ex["labels"] == ex["input_ids"]  # the loss on every token of the window
    # padding: a shorter text beside it in a batch; LF masks exactly the pads, as the author's collator does
    short = format_conversation([{"role": "system", "content": "你是心理咨询师。"}, {"role": "user", "content": "我睡不着。"}])
    short_ids = tok(short)["input_ids"]
    feats = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids), "images": None, "videos": None,
              "audios": None} for ids in (ex["input_ids"], short_ids)]
    lf = SFTDataCollatorWith4DAttentionMask(template=template, model=None, label_pad_token_id=-100, tokenizer=tok,
                                            processor=None)(feats)
    padded = tok([text, short], truncation=True, padding="max_length", max_length=384)
    theirs = DataCollatorForLanguageModeling(tokenizer=tok, mlm=False)([{"input_ids": i, "attention_mask": a} for i, a in
                                                                        zip(padded["input_ids"], padded["attention_mask"],
                                                                            strict=True)])
    for row in range(2):
        ours = lf["labels"][row][lf["attention_mask"][row] == 1].tolist()
        assert ours == theirs["labels"][row][theirs["labels"][row] != -100].tolist()  # the same supervised tokens
        assert (lf["labels"][row][lf["attention_mask"][row] == 0] == -100).all()  # pads carry no loss
    assert int((lf["labels"][1] != -100).sum()) == len(short_ids)
