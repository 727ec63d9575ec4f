"""Chat for label tasks with the crisis safety net (`make chat`, `make chat-gguf`).

The net (psyfactory.core.safety) reads the user's message: explicit crisis language of the writer
raises the answer's safety field from its no-risk value, never lowers it. A valid answer is shown
with only that field changed; an invalid one is shown as the model wrote it. Either way a
`[safety net]` line says what the net did, and reports about someone else are mentioned, not raised.
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


def chat_lf(cfg: dict[str, Any], net: SafetyNet, schema: LabelSchema) -> None:
    """`make chat` for a label task: LLaMA-Factory's ChatModel (the config `llamafactory-cli chat`
    would get), one message at a time (label answers are single-turn), the net on each answer.
    Reads stdin like `llamafactory-cli chat`: `exit` or end of input quits."""
    from llamafactory.chat import ChatModel

    model = ChatModel(dict(cfg))
    print(f"[psyfactory] label task: each message is assessed on its own; crisis safety net "
          f"{net.lexicon.path.name} on {net.field}. `exit` quits.", flush=True)
    while True:
        try:
            query = input("\nUser: ")
        except EOFError:
            break
        if query.strip() == "exit":
            break
        if not query.strip():
            continue
        reply = model.chat([{"role": "user", "content": query}])[0].response_text
        shown, decision = label_reply(reply, schema, net, query)
        print(f"Assistant: {shown}", flush=True)
        note = decision.note()
        if note:
            print(note, flush=True)
        if decision.raised and shown != reply:
            print(f"[safety net] the model's answer: {reply}", file=sys.stderr, flush=True)
