"""Fine-tuning data: agent traces and chat JSONL -> token ids with loss on the answer only.

Two line formats are accepted, mixed freely:

- an agent trace step, as ``edgeagent traces`` writes it:
  ``{"task": {..., "instruction": ...}, "step": 0, "previous": null | {action},
  "observation": "Screen ...", "action": {action}, "success": true}``;
- a chat record: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``.

Rendering follows the model's ``PromptFormat`` (edgeagent.agent.prompt). A tokenizer with a
chat template gets the ``episode`` layout: the steps of one episode become one conversation,
``episode_messages`` exactly as the runtime builds it, with the loss on every action (one
sequence per episode: each screen is read once, where the step layout repeated the task and
the system text at every step). A tokenizer without one (the built-in model) gets the plain format it
was trained on, exactly as ``converters.recipes.train_builtin.encode`` builds it:
``BOS prompt action "\\n" EOS``. Either way the labels are -100 everywhere except the
assistant's tokens (with the end-of-turn marker, so the model learns to stop).

Every bad line is collected and reported together, as ``file:line: reason``; with
``skip_bad=True`` they are counted and left out instead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from android_bridge.actions import Action, ActionError
from edgeagent.agent.prompt import SYSTEM_TEXT, PromptFormat, training_example

IGNORE = -100  # label of a position that carries no loss (PyTorch cross_entropy's ignore_index)
ROLES = ("system", "user", "assistant", "tool")
MAX_REPORTED = 20  # bad lines listed in the error message (all are counted)


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DataError(ValueError):
    """Data that cannot be used; ``bad`` lists every rejected line."""

    def __init__(self, message: str, bad: Sequence[BadLine] = ()):
        super().__init__(message)
        self.bad = list(bad)


@dataclass
class Record:
    """One training example before tokenization."""

    source: str  # "file:line"
    messages: list[dict[str, str]]
    task: dict[str, Any] | None = None  # trace steps: the emulator task spec
    prompt: str | None = None  # trace steps: the plain build_prompt text
    completion: str | None = None  # trace steps: the action JSON
    observation: str | None = None  # trace steps: the screen
    step: int | None = None  # trace steps: the step's index in its episode

    @property
    def group(self) -> str:
        """Records of one group go to the same side of a held-out split (a whole episode)."""
        return json.dumps(self.task, sort_keys=True) if self.task is not None else self.source


@dataclass
class LoadedData:
    records: list[Record]
    bad: list[BadLine] = field(default_factory=list)
    skipped_unsuccessful: int = 0  # trace steps of failed episodes, left out

    @property
    def is_traces(self) -> bool:
        return bool(self.records) and all(r.task is not None for r in self.records)

    def summary(self) -> dict[str, Any]:
        return {"records": len(self.records), "bad_lines": len(self.bad),
                "skipped_unsuccessful": self.skipped_unsuccessful,
                "kind": "traces" if self.is_traces else "chat" if self.records else "empty"}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    source: str

    @property
    def n_target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


# ---------------------------------------------------------------------------------------
# reading lines


def read_records(paths: str | Path | Iterable[str | Path], *, skip_bad: bool = False,
                 successful_only: bool = True) -> LoadedData:
    """Parse JSONL files. Raises DataError listing every bad line unless ``skip_bad``.

    ``successful_only`` leaves out the steps of episodes that failed (``"success": false``):
    imitating them teaches the failure.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    data = LoadedData(records=[])
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: no such data file (write traces with `edgeagent traces`)")
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    data.bad.append(BadLine(str(path), lineno, f"not UTF-8 ({e.reason} at byte {e.start})"))
                    continue
                if not line:
                    continue
                try:
                    record = parse_line(line, f"{path}:{lineno}", successful_only=successful_only)
                except ValueError as e:
                    data.bad.append(BadLine(str(path), lineno, str(e)))
                    continue
                if record is None:
                    data.skipped_unsuccessful += 1
                    continue
                data.records.append(record)
    if data.bad and not skip_bad:
        shown = "\n  ".join(str(b) for b in data.bad[:MAX_REPORTED])
        more = f"\n  ... and {len(data.bad) - MAX_REPORTED} more" if len(data.bad) > MAX_REPORTED else ""
        raise DataError(
            f"{len(data.bad)} bad line(s) in the data (fix them, or pass --skip-bad-lines to leave them out):\n  "
            f"{shown}{more}", data.bad)
    if not data.records:
        raise DataError(f"{', '.join(map(str, paths))}: no usable examples"
                        + (f" ({data.skipped_unsuccessful} steps of failed episodes left out)"
                           if data.skipped_unsuccessful else ""), data.bad)
    return data


def parse_line(line: str, source: str, *, successful_only: bool = True) -> Record | None:
    """One JSONL line -> Record (None: a failed episode's step, left out). ValueError says why."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return _chat_record(obj, source)
    if "observation" in obj or "action" in obj or "task" in obj:
        if successful_only and obj.get("success") is False:
            return None
        return _trace_record(obj, source)
    raise ValueError("neither an agent trace step (task, observation, action) nor a chat record (messages)")


def _trace_record(obj: dict, source: str) -> Record:
    for key in ("task", "observation", "action"):
        if key not in obj:
            raise ValueError(f"trace step: missing key {key!r}")
    task = obj["task"]
    if not isinstance(task, dict) or not isinstance(task.get("instruction"), str) or not task["instruction"].strip():
        raise ValueError("trace step: task.instruction must be a non-empty string")
    if not isinstance(obj["observation"], str):
        raise ValueError(f"trace step: observation must be a string, got {type(obj['observation']).__name__}")
    try:
        Action.from_dict(obj["action"])
    except ActionError as e:
        raise ValueError(f"trace step: action: {e}") from None
    previous = obj.get("previous")
    if previous is not None:
        try:
            Action.from_dict(previous)
        except ActionError as e:
            raise ValueError(f"trace step: previous: {e}") from None
    # The exact text train_builtin and the runtime (ModelPolicy) use.
    prompt, completion = training_example(task["instruction"], obj["observation"], previous, obj["action"])
    messages = [{"role": "user", "content": prompt.rstrip()}, {"role": "assistant", "content": completion}]
    step = obj.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 10_000):
        raise ValueError(f"trace step: step must be a whole number from 0, got {step!r}")
    return Record(source=source, messages=messages, task=task, prompt=prompt, completion=completion,
                  observation=obj["observation"], step=step)


def _chat_record(obj: dict, source: str) -> Record:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}]: expected an object with role and content")
        if m.get("role") not in ROLES:
            raise ValueError(f"messages[{i}].role: {m.get('role')!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}].content: expected a string")
        clean.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in clean):
        raise ValueError("messages: no assistant turn (nothing to learn)")
    return Record(source=source, messages=clean)


# ---------------------------------------------------------------------------------------
# rendering and tokenizing


def prompt_format(tokenizer) -> PromptFormat:
    """How this model is prompted: its chat template in the episode layout if it has one, else
    the plain format."""
    bos = tokenizer.bos_token
    add_bos = bool(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]
    if getattr(tokenizer, "chat_template", None):
        return PromptFormat(kind="chat", chat_template=tokenizer.chat_template, bos_token=bos,
                            eos_token=tokenizer.eos_token, add_bos=add_bos, layout="episode", system=SYSTEM_TEXT)
    return PromptFormat(kind="plain", bos_token=bos, eos_token=tokenizer.eos_token, add_bos=add_bos)


def encode_plain(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``BOS prompt completion "\\n" EOS``, loss on ``completion "\\n" EOS``: the built-in
    model's format, token for token what converters.recipes.train_builtin.encode makes."""
    p = tokenizer.encode(prompt, add_special_tokens=False)
    c = tokenizer.encode(completion + "\n", add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        c = c + [tokenizer.eos_token_id]
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return head + p + c, [IGNORE] * (len(head) + len(p)) + c


def encode_chat(tokenizer, messages: list[dict], fmt: PromptFormat) -> tuple[list[int], list[int]]:
    """The conversation in the chat template; loss on every assistant turn.

    The text is cut where each assistant turn starts and ends (the template rendered up to the
    turn with the generation prompt, and through it) and each piece is tokenized on its own:
    that is how the runtime meets the model, a tokenized prompt and then generated tokens.
    """
    def render(msgs: list[dict], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    full = render(messages, False)
    cuts: list[tuple[int, int]] = []  # [start, end) of each assistant turn in `full`
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = render(messages[:i], True), render(messages[: i + 1], False)
        if not (through.startswith(before) and full.startswith(through)):
            raise DataError("the chat template does not render conversations prefix by prefix; "
                            "cannot tell the assistant's tokens apart")
        cuts.append((len(before), len(through)))
    strip = fmt.add_bos and fmt.bos_token and full.startswith(fmt.bos_token)
    offset = len(fmt.bos_token) if strip else 0  # llama.cpp adds BOS itself (see PromptFormat.wrap)
    ids = [tokenizer.bos_token_id] if fmt.add_bos else []
    labels = [IGNORE] * len(ids)
    pos = offset
    for start, end in cuts:
        context = tokenizer.encode(full[pos:start], add_special_tokens=False) if start > pos else []
        answer = tokenizer.encode(full[start:end], add_special_tokens=False)
        ids += context + answer
        labels += [IGNORE] * len(context) + answer
        pos = end
    tail = tokenizer.encode(full[pos:], add_special_tokens=False) if pos < len(full) else []
    ids += tail
    labels += [IGNORE] * len(tail)
    return ids, labels


def episodes(records: Sequence[Record], fmt: PromptFormat) -> list[Record]:
    """Trace steps -> one record per episode, in the episode layout (chat records pass as they
    are). An episode is a run of consecutive steps 0, 1, 2, ... of one task in one file."""
    out: list[Record] = []
    run: list[Record] = []

    def flush() -> None:
        if not run:
            return
        first = run[0]
        messages = fmt.messages(first.task["instruction"], [r.observation or "" for r in run],
                                [r.completion or "" for r in run])
        out.append(Record(source=first.source, messages=messages, task=first.task))
        run.clear()

    for r in records:
        if r.task is None:
            flush()
            out.append(r)
            continue
        continues = (run and r.group == run[-1].group and r.step is not None and run[-1].step is not None
                     and r.step == run[-1].step + 1 and r.source.rsplit(":", 1)[0] == run[-1].source.rsplit(":", 1)[0])
        if not continues:
            flush()
        run.append(r)
    flush()
    return out


def encode_records(tokenizer, records: Sequence[Record], *, max_seq_len: int = 2048,
                   fmt: PromptFormat | None = None) -> tuple[list[Example], dict[str, int]]:
    """Tokenize. Examples longer than ``max_seq_len`` are left out (cutting an agent step's
    prompt would train the action on a screen the model never saw); the counts say how many.
    In the episode layout an example is a whole episode."""
    fmt = fmt or prompt_format(tokenizer)
    if fmt.is_episode:
        records = episodes(records, fmt)
    examples: list[Example] = []
    counts = {"too_long": 0, "no_target": 0}
    for r in records:
        if fmt.kind == "plain":
            if r.prompt is None:
                raise DataError(
                    f"{r.source}: chat ('messages') data need a model with a chat template, and this "
                    "tokenizer has none (use agent traces, or add chat_template to tokenizer_config.json)")
            ids, labels = encode_plain(tokenizer, r.prompt, r.completion or "")
        else:
            try:
                ids, labels = encode_chat(tokenizer, r.messages, fmt)
            except DataError as e:
                raise DataError(f"{r.source}: {e}") from None
        if len(ids) > max_seq_len:
            counts["too_long"] += 1
            continue
        if all(t == IGNORE for t in labels[1:]):
            counts["no_target"] += 1
            continue
        examples.append(Example(ids, labels, r.source))
    return examples, counts


# ---------------------------------------------------------------------------------------
# held-out split and the tasks it contains


def split_heldout(records: Sequence[Record], fraction: float, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, held-out). Whole episodes (all steps of one task) go to one side, so held-out
    steps never share a task with training steps."""
    if not 0 <= fraction < 1:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    groups = sorted({r.group for r in records})
    random.Random(seed).shuffle(groups)
    n_held = round(len(groups) * fraction)
    if fraction > 0 and len(groups) > 1:
        n_held = max(1, min(n_held, len(groups) - 1))
    held = set(groups[:n_held])
    return [r for r in records if r.group not in held], [r for r in records if r.group in held]


def emulator_tasks(records: Sequence[Record], limit: int | None = None) -> list:
    """The distinct emulator tasks in ``records`` (in order of appearance), as TaskSpecs;
    empty when the traces are not from the emulated phone (unknown templates)."""
    from android_bridge.emulator.tasks import TaskSpec

    seen: set[str] = set()
    tasks = []
    for r in records:
        if r.task is None or r.group in seen:
            continue
        seen.add(r.group)
        try:
            tasks.append(TaskSpec.from_dict(r.task))
        except (ValueError, TypeError, KeyError):
            return []
        if limit is not None and len(tasks) >= limit:
            break
    return tasks
