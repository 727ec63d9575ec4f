"""`make chat` (LLaMA-Factory's ChatModel, any task) and, for label tasks, the crisis safety net on each
answer (`make chat`, `make chat-gguf`).

The net (psyfactory.core.safety) reads the user's message: explicit crisis language of the writer (the
lexicon) or a detector score over its threshold (the learned detector, when trained) raises the answer's
safety field from its no-risk value, never lowers it. A valid answer is shown with only that field
changed; an invalid one is shown as the model wrote it. Either way a `[safety net]` line says what the
net did and which part fired, and reports about someone else are mentioned, not raised.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psyfactory.core.labels import LabelSchema
    from psyfactory.core.safety import NetDecision, SafetyNet


def label_reply(reply: str, schema: LabelSchema, net: SafetyNet, text: str) -> tuple[str, NetDecision]:
    """(the answer to show, what the net did) for one model reply to `text`."""
    parsed = schema.parse(reply)
    labels, decision = net.apply(parsed.labels, text)
    if decision.raised and labels is not None:
        return json.dumps(labels, ensure_ascii=False), decision  # the model's object, one field raised
    return reply, decision


def chat_lf(cfg: dict[str, Any], net: SafetyNet | None = None, schema: LabelSchema | None = None) -> None:
    """`make chat`: LLaMA-Factory's ChatModel on the config `llamafactory-cli chat` would get, read from
    stdin. `exit`, `quit`, an empty line, end of input or Ctrl-C quit cleanly; `clear` starts over; a
    message that would not fit the model's context is refused with its length instead of running for
    minutes. A label task (`net` given) is single-turn, with the crisis safety net on each answer."""
    from llamafactory.chat import ChatModel

    model = ChatModel(dict(cfg))
    tok = model.engine.tokenizer
    limit = _context(model)
    budget = int(cfg.get("max_new_tokens") or 512)
    if net is not None:
        print(f"[psyfactory] label task: each message is assessed on its own; crisis safety net on {net.field}: "
              f"{net.describe()}.", flush=True)
    print("[psyfactory] `exit` or an empty line quits, `clear` forgets the conversation.", flush=True)
    history: list[dict[str, str]] = []
    while True:
        try:
            query = input("\nUser: ")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if query.strip() in ("", "exit", "quit"):
            break
        if query.strip() == "clear":
            history = []
            print("[psyfactory] conversation cleared", flush=True)
            continue
        turn = [*([] if net is not None else history), {"role": "user", "content": query}]
        chars = sum(len(m["content"]) for m in turn)
        if limit and chars > CHARS_PER_TOKEN_MAX * limit:  # refused before tokenizing: BPE on it alone takes minutes
            print(f"[psyfactory] too long: {chars} characters, far beyond the model's context of {limit} tokens "
                  "(exceeds the model's context); shorten it (or `clear`)", flush=True)
            continue
        prompt = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        n = len(tok(prompt, add_special_tokens=False)["input_ids"])
        if limit and n + budget > limit:
            print(f"[psyfactory] too long: {n} tokens + {budget} to answer exceeds the model's context of {limit}; "
                  "shorten it (or `clear`)", flush=True)
            continue
        try:
            reply = model.chat(turn)[0].response_text
        except KeyboardInterrupt:
            print("\n[psyfactory] interrupted", flush=True)
            continue
        if net is None or schema is None:
            print(f"Assistant: {reply}", flush=True)
            history = [*turn, {"role": "assistant", "content": reply}]
            continue
        shown, decision = label_reply(reply, schema, net, query)
        print(f"Assistant: {shown}", flush=True)
        note = decision.note()
        if note:
            print(note, flush=True)
        if decision.raised and shown != reply:
            print(f"[safety net] the model's answer: {reply}", file=sys.stderr, flush=True)


CHARS_PER_TOKEN_MAX = 8  # no tokenizer packs more characters than this into a token on average


def _context(model: Any) -> int | None:
    """Tokens the loaded model reads at most (its config's max_position_embeddings), or None."""
    config = getattr(getattr(model.engine, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
