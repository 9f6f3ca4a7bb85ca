"""The model as a policy: prompt, grammar-constrained greedy decode, validate.

Greedy decoding makes a step reproducible; the grammar (built from the action schema and
the current screen) makes every output parse; ``Action`` validation catches the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from android_bridge.device import Screen
from edgeagent.agent.actions import Action, ActionError
from edgeagent.agent.grammar import action_grammar, copy_spans
from edgeagent.agent.loop import Decision
from edgeagent.agent.prompt import build_prompt, observation_text

# Counting questions ("How many alarms ...?") answer with a number that is on no label: one
# digit. A longer number must be copied from the screen; allowing every 2-digit number let the
# built-in model answer "14" for a display showing "184" (it copies the first digit, then drifts).
SMALL_NUMBERS = tuple(str(i) for i in range(10))


def text_choices(instruction: str) -> set[str]:
    """What a copying policy may type: the word spans of the instruction, each also after a
    space (appending to a field that has text, as in 'Add "buy stamps" to the end of the note')."""
    spans = copy_spans(instruction)
    return spans | {" " + s for s in spans}


def answer_choices(screen: Screen) -> set[str]:
    """What a copying policy may answer: a word span of a label or text on the screen, or a
    one-digit count."""
    answers = set(SMALL_NUMBERS)
    for e in screen.elements:
        answers |= copy_spans(e.label) | copy_spans(e.text)
    return answers


class ModelPolicy:
    """Drives an ``edgeagent.engine.Engine`` (or anything with the same ``generate``)."""

    def __init__(
        self,
        engine,
        *,
        apps: Sequence[str] | None = None,
        allow_xy: bool = False,
        copy_text: bool = False,  # type/answer only spans of the instruction / screen
        max_tokens: int = 96,
        reuse_prefix: bool = True,  # keep the KV cache of the shared prompt prefix between steps
    ):
        self.engine = engine
        self.apps = list(apps) if apps else None
        self.allow_xy = allow_xy
        self.copy_text = copy_text
        self.max_tokens = max_tokens
        self.reuse_prefix = reuse_prefix

    def prompt_for(self, instruction: str, screen: Screen, previous: Action | None) -> str:
        obs = observation_text(screen.elements, screen.app)
        return build_prompt(instruction, obs, previous.to_json() if previous else None)

    def grammar_for(self, instruction: str, screen: Screen) -> str:
        if not self.copy_text:
            return action_grammar(screen.elements, apps=self.apps, allow_xy=self.allow_xy)
        return action_grammar(
            screen.elements, apps=self.apps, allow_xy=self.allow_xy,
            text_choices=sorted(text_choices(instruction)), answer_choices=sorted(answer_choices(screen)),
        )

    def decide(self, instruction: str, screen: Screen, previous: Action | None) -> Decision:
        prompt = self.prompt_for(instruction, screen, previous)
        if not self.reuse_prefix:
            self.engine.reset()
        gen = self.engine.generate(
            prompt,
            max_tokens=self.max_tokens,
            temperature=0.0,
            grammar=self.grammar_for(instruction, screen),
        )
        text = gen.text.strip()
        metrics = dict(gen.metrics) if isinstance(gen.metrics, dict) else vars(gen.metrics).copy()
        try:
            return Decision(Action.from_json(text), text, None, metrics)
        except ActionError as exc:
            return Decision(None, text, f"invalid action: {exc}", metrics)
