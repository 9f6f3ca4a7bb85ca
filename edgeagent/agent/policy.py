"""The model as a policy: prompt, grammar-constrained greedy decode, validate.

Greedy decoding makes a step reproducible; the grammar (built from the action schema and
the current screen) makes every output parse; ``Action`` validation catches the rest.

A grammar can also push the model where it did not want to go. Asked to add Milk to the cart
on a screen where Milk is below the fold, the model starts ``{"action":"tap"``, wants
``"Add Milk to cart"``, and the grammar, which only allows what is on the screen, makes it
write ``"Add Apples to cart"`` at a probability of 1e-5. Token-by-token constrained decoding
commits to the first choice before it sees the dead end (the distortion that "grammar-aligned
decoding", Park et al. 2024, names). So when the chosen action holds a token the model gave
less than ``FORCED_P``, the policy also decodes the best action of another kind (scroll, done
...) and keeps whichever the model finds likelier as a whole: the sum of its tokens'
log-probabilities. A confident step costs nothing extra; a forced one costs a second, short
decode, reported in the step's metrics (``alternatives``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from android_bridge.actions import Action, ActionError
from android_bridge.device import Screen
from edgeagent.agent.grammar import action_grammar, copy_spans
from edgeagent.agent.loop import Decision
from edgeagent.agent.prompt import PromptFormat, build_prompt, observation_text

# Counting questions ("How many alarms ...?") answer with a number that is on no label: one
# digit. A longer number must be copied from the screen; allowing every 2-digit number let the
# built-in model answer "14" for a display showing "184" (it copies the first digit, then drifts).
SMALL_NUMBERS = tuple(str(i) for i in range(10))

# A chosen token the model gave less than this was forced by the grammar: try other kinds.
FORCED_P = 0.05
MAX_ALTERNATIVES = 2  # other action kinds tried after a forced choice (each one more decode)


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


def engine_prompt_format(engine, *, bundle_format: PromptFormat | None = None, raw: bool = False) -> PromptFormat:
    """The prompt format to run ``engine`` with: plain when ``raw``, else the bundle's when
    there is one, else what the GGUF's own metadata implies (its chat template, if any)."""
    if raw:
        return PromptFormat()
    if bundle_format is not None:
        return bundle_format
    metadata = getattr(engine, "metadata", None)
    if not metadata:
        return PromptFormat()
    return PromptFormat.from_gguf_metadata(metadata, engine.token_text)


class ModelPolicy:
    """Drives an ``edgeagent.engine.Engine`` (or anything with the same ``generate``).

    The prompt follows ``prompt_format`` (plain step prompts when None). In the ``episode``
    layout the policy keeps the conversation of the current task: the token ids it sent and
    the ones the model generated, so the next step's prompt is those plus the new turn's tokens
    and the engine's KV cache covers everything but the new turn. ``begin`` starts a task
    (``run_agent`` calls it; a new instruction also starts one).
    """

    def __init__(
        self,
        engine,
        *,
        apps: Sequence[str] | None = None,
        allow_xy: bool = False,
        copy_text: bool = False,  # type/answer only spans of the instruction / screen
        max_tokens: int = 96,
        reuse_prefix: bool = True,  # keep the KV cache of the shared prompt prefix between steps
        prompt_format: PromptFormat | None = None,
        rescore: bool = True,  # weigh another action kind when the grammar forced a choice
    ):
        self.engine = engine
        self.apps = list(apps) if apps else None
        self.allow_xy = allow_xy
        self.copy_text = copy_text
        self.max_tokens = max_tokens
        self.reuse_prefix = reuse_prefix
        self.prompt_format = prompt_format or PromptFormat()
        # Rescoring needs each token's log-probability: engines without it decode greedily only.
        self.rescore = rescore and "logprobs" in _parameters(getattr(engine, "generate", None))
        self._episode: _Episode | None = None

    # -- prompts --------------------------------------------------------------------------

    def begin(self, instruction: str) -> None:
        """A new task: forget the previous one's conversation."""
        self._episode = _Episode(instruction) if self.prompt_format.is_episode else None

    def prompt_for(self, instruction: str, screen: Screen, previous: Action | None) -> str:
        """The step layout's prompt (what ``decide`` sends outside the episode layout)."""
        obs = observation_text(screen.elements, screen.app)
        return self.prompt_format.wrap(build_prompt(instruction, obs, previous.to_json() if previous else None))

    def grammar_for(self, instruction: str, screen: Screen, exclude: Sequence[str] = ()) -> str:
        if not self.copy_text:
            return action_grammar(screen.elements, apps=self.apps, allow_xy=self.allow_xy, exclude=exclude)
        return action_grammar(
            screen.elements, apps=self.apps, allow_xy=self.allow_xy,
            text_choices=sorted(text_choices(instruction)), answer_choices=sorted(answer_choices(screen)),
            exclude=exclude,
        )

    def _episode_prompt(self, instruction: str, screen: Screen) -> list[int] | str:
        ep = self._episode
        if ep is None or ep.instruction != instruction:
            ep = self._episode = _Episode(instruction)
        if len(ep.observations) > len(ep.actions):
            ep.observations.pop()  # the last step gave no action: its screen is asked again
        ep.observations.append(observation_text(screen.elements, screen.app))
        n_ctx = getattr(self.engine, "n_ctx", None)
        while True:
            n = len(ep.observations)
            keep = n - ep.first_kept if ep.first_kept else None
            text = self.prompt_format.episode_prompt(instruction, ep.observations, ep.actions, keep_screens=keep)
            tokens = ep.tokens_for(text, self.engine)
            ep.prompt_text = text
            if not n_ctx or tokens is None or len(tokens) + self.max_tokens <= n_ctx or ep.first_kept >= n - 1:
                return tokens if tokens is not None else text
            # The context is full: leave out the older half of the screens still shown, and keep
            # that boundary until it fills again. Moving it one screen per step would rewrite the
            # prompt from the first elided screen on at every step (no prefix left to reuse).
            ep.first_kept = min(n - 1, ep.first_kept + max(1, (n - ep.first_kept) // 2))

    # -- one step -------------------------------------------------------------------------

    def decide(self, instruction: str, screen: Screen, previous: Action | None) -> Decision:
        episode = self.prompt_format.is_episode
        prompt = self._episode_prompt(instruction, screen) if episode else self.prompt_for(instruction, screen, previous)
        if not self.reuse_prefix:
            self.engine.reset()
        gen, metrics = self._generate(prompt, instruction, screen)
        text = gen.text.strip()
        try:
            action = Action.from_json(text)
        except ActionError as exc:
            return Decision(None, text, f"invalid action: {exc}", metrics)
        if episode and self._episode is not None:
            self._episode.answered(prompt, gen.text, getattr(gen, "tokens", None))
        return Decision(action, text, None, metrics)

    def _generate(self, prompt, instruction: str, screen: Screen):
        """The step's generation and its metrics: greedy under the screen's grammar, then, if
        the grammar forced a token the model gave < ``FORCED_P``, the best action of up to
        ``MAX_ALTERNATIVES`` other kinds, keeping the likeliest whole action."""
        extra = {"logprobs": True} if self.rescore else {}
        gen = self.engine.generate(prompt, max_tokens=self.max_tokens, temperature=0.0,
                                   grammar=self.grammar_for(instruction, screen), **extra)
        metrics = _metrics_dict(gen.metrics)
        if not self.rescore or not _forced(gen):
            return gen, metrics
        tried, best = [gen], gen
        excluded: list[str] = []
        for _ in range(MAX_ALTERNATIVES):
            kind = _kind(gen.text)
            if kind is None or kind in excluded:
                break
            excluded.append(kind)
            try:
                grammar = self.grammar_for(instruction, screen, exclude=excluded)
            except ValueError:  # no kind left
                break
            gen = self.engine.generate(prompt, max_tokens=self.max_tokens, temperature=0.0, grammar=grammar, **extra)
            tried.append(gen)
            if sum(gen.logprobs) > sum(best.logprobs):
                best = gen
            if not _forced(gen):
                break
        # The step cost every decode it made; ttft stays the first call's.
        for other in tried[1:]:
            m = _metrics_dict(other.metrics)
            for key in ("total_ms", "decode_ms", "prefill_ms", "generated_tokens", "evaluated_prompt_tokens"):
                metrics[key] = metrics.get(key, 0) + m.get(key, 0)
        metrics["reused_prompt_tokens"] = metrics.get("prompt_tokens", 0) - metrics.get("evaluated_prompt_tokens", 0)
        metrics["alternatives"] = len(tried) - 1
        metrics["peak_rss_mb"] = max(_metrics_dict(g.metrics).get("peak_rss_mb", 0.0) for g in tried)
        return best, metrics


def _parameters(fn) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _metrics_dict(metrics) -> dict:
    return dict(metrics) if isinstance(metrics, dict) else vars(metrics).copy()


def _forced(gen) -> bool:
    """Whether the grammar made the model write a token it gave less than ``FORCED_P``."""
    return bool(gen.logprobs) and min(gen.logprobs) < math.log(FORCED_P)


def _kind(text: str) -> str | None:
    """The action kind of a generated action ("tap" in {"action":"tap",...}), None if it has none."""
    try:
        return Action.from_json(text.strip()).action
    except ActionError:
        return None


class _Episode:
    """One task's conversation in the episode layout, as text and as the token ids sent."""

    def __init__(self, instruction: str):
        self.instruction = instruction
        self.observations: list[str] = []
        self.actions: list[str] = []
        self.prompt_text = ""  # the prompt of the current step, as text
        self.first_kept = 0  # screens before this one are left out (a full context)
        self._text = ""  # the last prompt and the model's answer to it
        self._tokens: list[int] | None = None  # the same as the token ids the engine has seen

    def tokens_for(self, text: str, engine) -> list[int] | None:
        """``text``'s token ids, reusing the ids of the previous prompt and answer when ``text``
        extends them (the chat template ends each turn with a special token, so the new turn
        tokenizes on its own exactly as in the whole text). None: the engine takes text only."""
        tokenize = getattr(engine, "tokenize", None)
        if tokenize is None:
            return None
        if self._tokens is not None and self._text and text.startswith(self._text):
            return self._tokens + tokenize(text[len(self._text):], add_bos=False)
        return tokenize(text)

    def answered(self, prompt: list[int] | str, raw: str, generated: Sequence[int] | None) -> None:
        """The model answered ``raw`` (token ids ``generated``) to ``prompt``: the answer
        becomes the assistant's turn, and prompt + answer the prefix the next step extends."""
        self.actions.append(raw.strip())
        self._text = self.prompt_text + raw
        self._tokens = list(prompt) + list(generated) if isinstance(prompt, list) and generated is not None else None
