"""One trace step -> (prompt, completion): ``edgeagent.agent.prompt.training_example`` is the
text the converter's data loader, the built-in recipe and the runtime's held-out examples all
use, and it is byte for byte the prompt ``ModelPolicy`` sends and the JSON the model writes."""

from __future__ import annotations

import json

import pytest

from android_bridge.actions import Action, action_json
from android_bridge.emulator.expert import expert_action
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import generate_tasks
from edgeagent.agent.episode import expert_examples, run_episode, trace_records
from edgeagent.agent.policy import ModelPolicy
from edgeagent.agent.prompt import training_example


def test_a_step_is_the_pinned_text_with_non_ascii_kept_and_keys_in_order():
    prompt, completion = training_example("Schreib „Grüße“", 'Screen:\n[0] field "Nachricht" = ""',
                                           {"action": "open_app", "app": "Messages"},
                                           {"action": "type", "text": "Grüße ☺", "index": 0})
    assert prompt == ('Previous: {"action":"open_app","app":"Messages"}\nScreen:\n[0] field "Nachricht" = ""\n'
                      'Task: Schreib „Grüße“\nAction: ')
    assert completion == '{"action":"type","text":"Grüße ☺","index":0}'
    assert training_example("t", "S", None, {"action": "back"})[0] == "Previous: none\nS\nTask: t\nAction: "
    assert action_json({"action": "back"}) == Action(action="back").to_json()


def _expert_run(n_tasks: int, seed: int):
    """The expert on generated tasks, recording the runtime policy's prompt at every step."""
    runtime = ModelPolicy(engine=None)
    prompts: list[str] = []

    def policy(task, screen, history):
        prompts.append(runtime.prompt_for(task.instruction, screen, history[-1] if history else None))
        action = expert_action(task, screen, history)
        return action

    phone = EmulatedPhone()
    results = [run_episode(phone, task, policy) for task in generate_tasks(n_tasks, seed)]
    return results, prompts


def test_runtime_prompts_and_every_consumer_of_a_trace_agree(tmp_path):
    results, runtime_prompts = _expert_run(6, 41)
    assert all(r.success for r in results)
    records = [rec for r in results for rec in trace_records(r)]
    trace = tmp_path / "traces.jsonl"
    trace.write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records), encoding="utf-8")

    expected = [training_example(r["task"]["instruction"], r["observation"], r["previous"], r["action"])
                for r in records]
    assert [p for p, _ in expected] == runtime_prompts  # the runtime sends what training reads
    assert [c for _, c in expected] == [Action.from_dict(r["action"]).to_json() for r in records]

    # the runtime's held-out examples (perplexity in bundles, bench, ablation)
    assert [(e["prompt"], e["completion"]) for e in expert_examples(6, 41)] == expected

    # the converter's data loader
    from converters.data import read_records

    loaded = read_records(trace)
    assert [(r.prompt, r.completion) for r in loaded.records] == expected
    assert [r.messages[0]["content"] for r in loaded.records] == [p.rstrip() for p, _ in expected]

    # the built-in model's recipe (torch)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from converters.recipes.train_builtin import load_examples

    assert [(e["prompt"], e["completion"]) for e in load_examples(trace)] == expected
