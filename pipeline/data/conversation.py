"""Conversations as text: the one rendering of chat messages that training, evaluation, scoring and the RL reward
function share, so a conversational input and its rendered text give the same pairs and the same scores.

DistilBERT has no chat template. The rendering is HH-RLHF's own text: turns `Human: ...`, `Assistant: ...` (and
`System: ...`) joined by a blank line. A (prompt, completion) becomes the training encoding's (prompt, answer):
the prompt's turns rendered, and the answer is the completion's assistant text (a completion of several messages
renders its later turns with their labels). Its name is stored in a trained model's config.json
(`q2_conversation_format`) so scoring renders as training did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.core.errors import UserError

CONVERSATION_FORMAT = "human-assistant-v1"
CONFIG_KEY = "q2_conversation_format"
ROLE_LABELS = {"system": "System", "user": "Human", "assistant": "Assistant"}
TURN_SEPARATOR = "\n\n"


def is_messages(value: Any) -> bool:
    """A list of {"role", "content"} messages (TRL's conversational format), as opposed to plain text."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, Mapping) for m in value)


def _content(message: Mapping[str, Any], where: str, index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)) and all(
        isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)  # multimodal-style parts, text only
    kind = "missing" if content is None else f"a {type(content).__name__}"
    raise UserError(f"{where}: message {index + 1} has {kind} content; content must be text")


def _turns(messages: Any, where: str) -> list[tuple[str, str]]:
    """(role, text) of each message; malformed messages are a one-line error naming `where` and the message."""
    if isinstance(messages, (list, tuple)) and not messages:
        raise UserError(f"{where}: the conversation is empty; give at least one message")
    if not is_messages(messages):
        raise UserError(f"{where}: expected text or a list of {{'role', 'content'}} messages")
    turns = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role is None:
            raise UserError(f"{where}: message {index + 1} has no 'role'")
        if role not in ROLE_LABELS:
            raise UserError(
                f"{where}: message {index + 1} has role {role!r}; roles are {', '.join(map(repr, ROLE_LABELS))}"
            )
        turns.append((role, _content(message, where, index)))
    return turns


def render_turns(turns: Sequence[tuple[str, str]], label_first: bool = True) -> str:
    parts = []
    for i, (role, text) in enumerate(turns):
        parts.append(text if i == 0 and not label_first else f"{ROLE_LABELS[role]}: {text}")
    return TURN_SEPARATOR.join(parts)


def prompt_text(prompt: Any, where: str) -> str:
    """A prompt as the text the model reads: plain text as it is, messages rendered."""
    if isinstance(prompt, str):
        return prompt
    return render_turns(_turns(prompt, where))


def answer_text(answer: Any, where: str) -> str:
    """An answer (completion) as the text the model reads: plain text as it is; messages rendered with the first
    assistant message's label left out (it is the answer itself, as in HH-RLHF's pairs)."""
    if isinstance(answer, str):
        return answer
    turns = _turns(answer, where)
    return render_turns(turns, label_first=turns[0][0] != "assistant")


def split_implicit_prompt(chosen: Any, rejected: Any, where: str) -> tuple[Any, Any, Any]:
    """TRL's implicit-prompt format (whole conversations in chosen and rejected): the shared leading messages are
    the prompt, the rest of each conversation its answer."""
    chosen_turns, rejected_turns = _turns(chosen, where), _turns(rejected, where)
    shared = 0
    while shared < min(len(chosen_turns), len(rejected_turns)) - 1 and chosen_turns[shared] == rejected_turns[shared]:
        shared += 1
    if shared == 0:
        raise UserError(f"{where}: chosen and rejected share no leading prompt message; give a prompt column")
    return list(chosen[:shared]), list(chosen[shared:]), list(rejected[shared:])


def pair_text(prompt: Any, answer: Any, where: str) -> tuple[str, str]:
    """(prompt, answer) as the training encoding's two texts, for plain or conversational inputs."""
    return prompt_text(prompt, where), answer_text(answer, where)


def check_format(config: Any, where: str) -> None:
    """A model trained with another rendering of conversations cannot be scored with this one."""
    name = getattr(config, CONFIG_KEY, None) if config is not None else None
    if name not in (None, CONVERSATION_FORMAT):
        raise UserError(
            f"{where}: the model was trained with conversation format {name!r}; this version renders "
            f"{CONVERSATION_FORMAT!r}: upgrade q2-reward or score plain text"
        )


def _is_message_column(source: Any, index: int) -> bool:
    import pyarrow as pa

    name = source.table.column_names[index]
    return name in source.nested or pa.types.is_nested(source.table.column(index).type)


def _cells(source: Any, index: int) -> list[Any]:
    """A column's values as Python objects. A JSON column whose objects Arrow could not type alike was kept as each
    value's JSON text (the reader's fallback): decoded back here."""
    import pyarrow as pa

    column = source.table.column(index)
    cells = column.to_pylist()
    if source.table.column_names[index] in source.nested and not pa.types.is_nested(column.type):
        cells = [None if cell is None else json.loads(cell) for cell in cells]
    return cells


def render_source(source: Any, columns: Any) -> Any:
    """A source table whose prompt/answer/chosen/rejected columns hold TRL's conversational messages, with those
    columns rendered to text (plain text cells stay as they are). TRL's implicit-prompt format (whole conversations
    in chosen and rejected, no prompt column) gets a prompt column: the messages both share. Returns the source
    unchanged when no such column holds messages."""
    import dataclasses

    import pyarrow as pa

    from pipeline.data.columns import find_column

    names = source.table.column_names
    wanted = {role: getattr(columns, role) for role in ("prompt", "answer", "chosen", "rejected")}
    roles = {role: find_column(names, name) for role, name in wanted.items() if name}
    roles = {role: index for role, index in roles.items() if index is not None}
    messages = {role for role, index in roles.items() if _is_message_column(source, index)}
    if not messages:
        return source
    values = {role: _cells(source, index) for role, index in roles.items()}
    numbers = source.rows(range(source.num_rows)) if source.num_rows else []
    rows = [f"{source.label}: {source.row_word} {number}" for number in numbers]
    implicit = "prompt" not in roles and {"chosen", "rejected"} <= messages
    if implicit:
        split = [
            split_implicit_prompt(c, r, rows[i]) if c and r else (None, c, r)
            for i, (c, r) in enumerate(zip(values["chosen"], values["rejected"], strict=True))
        ]
        values["prompt"] = [s[0] for s in split]
        values["chosen"], values["rejected"] = [s[1] for s in split], [s[2] for s in split]
    rendered = {}
    for role, cells in values.items():
        render = prompt_text if role == "prompt" else answer_text
        name = names[roles[role]] if role in roles else "chosen/rejected"
        rendered[role] = pa.array(
            [None if cell is None else render(cell, f"{rows[i]}: column {name!r}") for i, cell in enumerate(cells)],
            pa.large_string(),
        )
    table = source.table
    for role, array in rendered.items():
        if role in roles:
            table = table.set_column(roles[role], names[roles[role]], array)
        else:
            table = table.append_column(columns.prompt or "prompt", array)
    nested = {name: row for name, row in source.nested.items() if name not in {names[i] for i in roles.values()}}
    note = f"conversations rendered as text ({CONVERSATION_FORMAT})" + (
        ", prompt = shared messages" if implicit else ""
    )
    return dataclasses.replace(source, table=table, nested=nested, notes=[*source.notes, note])
