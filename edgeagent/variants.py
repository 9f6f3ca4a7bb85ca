"""Which GGUF runs: a model file, a bundle's variant (its best, or the one selected for a device
profile), a shipped agent (``edgeagent.agents``) or the built-in model.

``run`` and ``demo`` take the same choice (``--model``, ``--agent``, ``--bundle``, ``--profile``,
``--quant``); this module turns it into one ``ModelChoice`` (the file, a name for people, the
prompt format it is run with) and raises ``VariantError`` with one line saying what is wrong.
The command line prints that line and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class VariantError(ValueError):
    """The choice names nothing that can run (a missing file, a conflict, no variant fits)."""


@dataclass
class ModelChoice:
    path: Path
    name: str  # what runs, for people: "smollm2 q8_0", "builtin q8_0", or the file
    prompt_format: Any = None  # a PromptFormat; None: what the GGUF's metadata implies
    draft: Path | None = None  # the bundle's speculative draft (an exit GGUF) for this variant
    n_draft: int = 0


def resolve_model(model: Path | None, quant: str = "q8_0", agent: str | None = None, *,
                  note: Callable[[str], None] | None = None) -> ModelChoice:
    """The GGUF to run: ``model`` as given, else the shipped agent (``agent``, default the best
    one installed, ``edgeagent.agents.DEFAULT_AGENT``) at ``quant``. When the default agent is
    not installed the built-in model runs and ``note`` is told why."""
    if model is not None:
        if agent is not None:
            raise VariantError("give --model or --agent, not both")
        if not model.exists():
            raise VariantError(f"{model}: no such model file")
        return ModelChoice(model, str(model))
    if agent not in (None, "builtin"):
        from edgeagent.agents import AgentUnavailable, shipped_agent

        try:
            return _agent_choice(shipped_agent(agent), agent, quant)
        except AgentUnavailable as exc:
            raise VariantError(str(exc)) from None
    if agent is None:
        from edgeagent.agents import DEFAULT_AGENT, AgentUnavailable, shipped_agent

        agent = DEFAULT_AGENT
        if agent != "builtin":
            try:
                return _agent_choice(shipped_agent(agent), agent, quant)
            except AgentUnavailable as exc:
                if note is not None:
                    note(f"note: {exc}; running the built-in 5M model instead")
    from edgeagent.builtin import BuiltinModelMissing, builtin_gguf

    try:
        return ModelChoice(builtin_gguf(quant), f"builtin {quant}")
    except BuiltinModelMissing as exc:
        raise VariantError(str(exc)) from None


def _agent_choice(chosen, name: str, quant: str) -> ModelChoice:
    """A shipped agent's GGUF at ``quant``, with the draft its card names (an exit of its own)."""
    draft = chosen.draft()
    if draft is None:
        return ModelChoice(chosen.gguf(quant), f"{name} {quant}", chosen.prompt_format)
    k, n_draft = draft
    return ModelChoice(chosen.gguf(quant), f"{name} {quant} (draft: exit {k}, {n_draft} tokens)", chosen.prompt_format,
                       chosen.gguf(quant, exit_layer=k), n_draft)


def default_bundle(threads: int | None = None, note: Callable[[str], None] | None = None) -> Path:
    """The bundle a command chooses a variant from when given none: the default agent's
    (``agents.DEFAULT_AGENT``, its measured quantizations, ``ShippedAgent.bundle``), else the
    built-in model's, ``note`` told why. ``VariantError`` when neither can be had."""
    from edgeagent.agents import DEFAULT_AGENT, AgentUnavailable, shipped_agent
    from edgeagent.builtin import BuiltinModelMissing, builtin_bundle

    if DEFAULT_AGENT != "builtin":
        try:
            return shipped_agent(DEFAULT_AGENT).bundle()
        except AgentUnavailable as exc:
            if note is not None:
                note(f"note: {exc}; using the built-in 5M model's bundle instead")
    try:
        return builtin_bundle(threads=threads)
    except BuiltinModelMissing as exc:
        raise VariantError(str(exc)) from None


def resolve_variant(*, model: Path | None = None, agent: str | None = None, bundle: Path | None = None,
                    profile: str | None = None, quant: str = "q8_0", threads: int | None = None,
                    variant: str | None = None, note: Callable[[str], None] | None = None) -> ModelChoice:
    """The GGUF ``run`` and ``demo`` run. With ``bundle`` or ``profile``: the bundle's variant
    (every file's sha256 checked first): ``variant`` by id, else its best
    (``Bundle.best_quality``), or the one ``select_variant`` picks for the profile; ``profile``
    alone chooses among ``agent``'s measured quantizations (``default_bundle`` when no agent is
    named; ``--agent builtin``: the built-in model's bundle). Else ``resolve_model``."""
    if bundle is not None and model is not None:
        raise VariantError("give --model or --bundle, not both")
    if variant is not None and bundle is None:
        raise VariantError("--variant names a variant of --bundle; give --bundle too")
    if variant is not None and profile is not None:
        raise VariantError("give --variant or --profile (which selects one), not both")
    if profile is not None and model is not None:
        raise VariantError("--profile selects a variant of a bundle; drop --model (or use --bundle)")
    if bundle is None and profile is None:
        return resolve_model(model, quant, agent, note=note)

    from edgeagent.bundle import BundleError, load_bundle

    given = bundle is not None
    if bundle is None:
        bundle = _agent_bundle(agent, threads, note)
    try:
        loaded = load_bundle(bundle)
    except BundleError as exc:
        raise VariantError(str(exc)) from None
    if profile is None:
        try:
            chosen = loaded.variant(variant) if variant is not None else loaded.best_quality()
        except BundleError as exc:
            raise VariantError(str(exc)) from None
        return _with_draft(ModelChoice(chosen.path, f"{bundle} {chosen.id}", loaded.prompt_format), loaded, chosen)
    from edgeagent.profiles import ProfileError, load_profile
    from edgeagent.select import NoVariantFits, select_variant

    try:
        selected = select_variant(loaded, load_profile(profile))["selected"]
    except (ProfileError, NoVariantFits) as exc:
        raise VariantError(str(exc)) from None
    name = f"{selected['id']} (selected for {profile}" + (f" from {bundle})" if given else ")")
    return _with_draft(ModelChoice(Path(selected["path"]), name, loaded.prompt_format), loaded,
                       loaded.variant(selected["id"]))


def _with_draft(choice: ModelChoice, loaded, chosen) -> ModelChoice:
    """``choice`` with the draft the bundle's manifest names for ``chosen`` (if any)."""
    found = loaded.speculative_draft(chosen)
    if found is None:
        return choice
    draft, n_draft = found
    return ModelChoice(choice.path, f"{choice.name} (draft {draft.id}, {n_draft} tokens)", choice.prompt_format,
                       draft.path, n_draft)


def _agent_bundle(agent: str | None, threads: int | None, note: Callable[[str], None] | None) -> Path:
    """``--profile`` without ``--bundle``: the named agent's bundle, else ``default_bundle``."""
    if agent is None:
        return default_bundle(threads, note)
    from edgeagent.agents import AgentUnavailable, shipped_agent
    from edgeagent.builtin import BuiltinModelMissing, builtin_bundle

    try:
        return builtin_bundle(threads=threads) if agent == "builtin" else shipped_agent(agent).bundle()
    except (AgentUnavailable, BuiltinModelMissing) as exc:
        raise VariantError(str(exc)) from None
