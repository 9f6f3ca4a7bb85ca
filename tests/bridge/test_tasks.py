"""Tasks, the expert policy and the episode loop on the emulated phone."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from android_bridge.actions import Action
from android_bridge.device import Battery, Device, Screen
from android_bridge.emulator.expert import SKILLS, expert_action
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import APP_NAMES, TEMPLATES, TaskSpec, answers_match, generate_tasks, make_task
from android_bridge.uitree import parse_dump
from edgeagent.agent.episode import run_episode, run_tasks, summarize, trace_records
from edgeagent.agent.prompt import MAX_ELEMENTS, MAX_LABEL_CHARS
from edgeagent.agent.safety import sensitive_element

SPEC_KEYS = {"app", "template", "params", "instruction", "seed"}


def one_task_per_template(seed: int = 11) -> list[TaskSpec]:
    return [make_task(name, seed + i) for i, name in enumerate(sorted(TEMPLATES))]


# --- templates and specs -------------------------------------------------------------------------

def test_there_are_at_least_30_templates_over_every_app() -> None:
    assert len(TEMPLATES) >= 30
    assert {t.app for t in TEMPLATES.values()} >= set(APP_NAMES)
    assert set(SKILLS) == set(TEMPLATES)
    assert sum(t.expected_status == "infeasible" for t in TEMPLATES.values()) >= 3
    assert sum(t.has_answer for t in TEMPLATES.values()) >= 5


def test_generate_tasks_is_deterministic_json_and_covers_every_template() -> None:
    tasks = generate_tasks(len(TEMPLATES), seed=5, templates=["all"])
    assert [t.to_dict() for t in tasks] == [t.to_dict() for t in generate_tasks(len(TEMPLATES), seed=5, templates=["all"])]
    assert [t.to_dict() for t in tasks] != [t.to_dict() for t in generate_tasks(len(TEMPLATES), seed=6, templates=["all"])]
    assert Counter(t.template for t in tasks) == Counter(list(TEMPLATES))  # one full cycle: each once
    default = [t.template for t in generate_tasks(len(TEMPLATES), seed=5)]
    assert set(default) == {t.name for t in TEMPLATES.values() if t.default_mix}  # the impossible ones only on request
    for t in tasks:
        spec = json.loads(json.dumps(t.to_dict()))
        assert set(spec) == SPEC_KEYS
        assert TaskSpec.from_dict(spec) == t
        assert spec["instruction"] and "{" not in spec["instruction"]


def test_instructions_read_naturally() -> None:
    assert make_task("switch_setting", 1).instruction in {
        "Turn on Wi-Fi", "Turn off Wi-Fi", "Turn on Bluetooth", "Turn off Bluetooth",
        "Turn on airplane mode", "Turn off airplane mode"}
    add = make_task("add_alarm", 2)
    assert add.instruction == f"Set an alarm for {add.params['hour']}:{add.params['minute']:02d}"
    send = make_task("send_message", 3)
    assert send.instruction == f'Send "{send.params["text"]}" to {send.params["name"]}'
    assert make_task("buy_one", 4).instruction.endswith(" to the cart and check out")


def test_app_filters_hold_apps_out() -> None:
    tasks = generate_tasks(80, seed=1, exclude_apps=["Shop", "messages"])
    assert tasks and not {t.app for t in tasks} & {"Shop", "Messages"}
    only = generate_tasks(20, seed=1, apps=["Clock,Notes"])
    assert {t.app for t in only} == {"Clock", "Notes"}
    with pytest.raises(ValueError, match="unknown app 'Fakebook'"):
        generate_tasks(3, apps=["Fakebook"])
    with pytest.raises(ValueError, match="no apps"):
        generate_tasks(3, apps=["Shop"], exclude_apps=["Shop"])
    with pytest.raises(ValueError, match="unknown task template"):
        TaskSpec.from_dict({"app": "Clock", "template": "nope", "params": {}, "instruction": "", "seed": 0})


def test_template_filter_oversamples_only_the_named_templates() -> None:
    tasks = generate_tasks(30, seed=5, templates=["calc_binary,delete_alarm", "set_brightness"])
    assert {t.template for t in tasks} == {"calc_binary", "delete_alarm", "set_brightness"}
    with pytest.raises(ValueError, match="unknown task template 'nope'"):
        generate_tasks(3, templates=["nope"])
    with pytest.raises(ValueError, match="no task templates left"):
        generate_tasks(3, apps=["Clock"], templates=["calc_binary"])


def test_setup_is_deterministic_from_the_seed() -> None:
    task = make_task("remove_from_cart", 42)
    a, b = EmulatedPhone(), EmulatedPhone(seed=999)
    task.setup(a)
    task.setup(b)
    assert a.dump_xml() == b.dump_xml()
    assert a.world == b.world
    assert a.world.cart == {task.params["other"]: 1, task.params["product"]: 1}


# --- the expert ----------------------------------------------------------------------------------

def test_expert_solves_200_generated_tasks() -> None:
    results = run_tasks(generate_tasks(200, seed=0), expert_action)
    failed = [(r.task.to_dict(), r.final, r.errors) for r in results if not r.success]
    assert failed == []
    stats = summarize(results)
    assert stats["tasks"] == 200 and stats["success_rate"] == 1.0
    assert 3 <= stats["steps"] <= 12
    assert all(not r.errors for r in results)


@pytest.mark.parametrize("size", [(720, 1600), (1440, 3200)])
def test_expert_solves_every_template_on_other_screen_sizes(size) -> None:
    results = run_tasks(one_task_per_template(seed=60), expert_action, phone=EmulatedPhone(size=size))
    assert [r.task.template for r in results if not r.success] == []


def test_expert_ends_infeasible_tasks_as_infeasible_and_answers_questions() -> None:
    phone = EmulatedPhone()
    for task in one_task_per_template():
        result = run_episode(phone, task, expert_action)
        assert result.success, task.to_dict()
        assert result.final.status == task.expected_status
        if task.definition.has_answer:
            assert answers_match(task.expected_answer(), result.final.answer)
        else:
            assert result.final.answer is None


def test_doing_nothing_or_answering_wrong_fails_every_task() -> None:
    phone = EmulatedPhone()

    def give_up(task, screen, history):
        return Action(action="done", status="complete", answer="no idea")

    for task in one_task_per_template():
        assert not run_episode(phone, task, give_up).success, task.to_dict()
        task.setup(phone)
        assert not task.succeeded(phone, None)  # ran out of steps: no done


def test_expert_names_every_element_it_points_at_and_screens_fit_the_prompt() -> None:
    phone = EmulatedPhone()
    seen_kinds: Counter = Counter()

    def on_step(step, screen: Screen) -> None:
        action = Action.from_dict(step.action)
        seen_kinds[action.action] += 1
        if action.index is not None:
            assert action.element == screen.element(action.index).label
        assert len(screen.elements) <= MAX_ELEMENTS
        for e in screen.elements:
            if e.clickable or e.editable or e.scrollable:
                assert len(e.label) <= MAX_LABEL_CHARS, e.label
        # The label rule a safety gate uses on real phones agrees with the emulator's marks.
        for e in screen.elements:
            assert phone.is_sensitive(Action(action="tap", index=e.index), screen) == (sensitive_element(e) is not None), e

    for task in generate_tasks(120, seed=3):
        assert run_episode(phone, task, expert_action, on_step=on_step).success
    assert {"open_app", "tap", "type", "scroll", "done"} <= set(seen_kinds)


def test_expert_looks_a_named_contact_or_product_up_by_search_before_answering() -> None:
    """Questions about one contact or product are answered from a search: the name is typed as
    the instruction writes it, and the answer is then the only value of its kind on screen."""
    phone = EmulatedPhone()
    for template, param in (("contact_phone_question", "name"), ("price_question", "product")):
        for seed in range(5):
            task = make_task(template, seed)
            screens: list[Screen] = []
            result = run_episode(phone, task, expert_action, on_step=lambda step, screen: screens.append(screen))
            assert result.success
            typed = [a for a in result.run.steps if a.action["action"] == "type"]
            assert [a.action["text"] for a in typed] == [task.params[param]]
            assert task.params[param] in task.instruction
            if template == "price_question":
                assert sum(e.resource_id.endswith(":id/product_detail") for e in screens[-1].elements) == 1


def test_the_shop_says_a_count_in_the_words_of_a_buy_task() -> None:
    phone = EmulatedPhone()
    task = make_task("buy_two", 4)
    task.setup(phone)
    phone.launch("Shop")
    product = task.params["product1"]
    for n in (1, 2):
        screen = phone.screen()
        add = next(e for e in screen.elements if e.label == f"Add {product} to cart")
        phone.act(Action(action="tap", index=add.index))
        assert f"{n} {product} in cart" in [e.label for e in phone.screen().elements]
    assert f"Buy {task.params['qty1']} {product}" in task.instruction


def test_a_conversation_says_which_messages_were_received() -> None:
    """"The last message X sent me" is answerable from the prompt alone: each bubble says
    whether it was received or sent (the expert reads the same from resource ids)."""
    from edgeagent.agent.prompt import observation_text, quote

    phone = EmulatedPhone()
    task = make_task("last_message_question", 5)
    task.setup(phone)
    phone.launch("Messages")
    thread = next(e for e in phone.screen().elements if e.label == task.params["name"])
    phone.act(Action(action="tap", index=thread.index))
    lines = observation_text(phone.screen().elements).splitlines()
    messages = phone.world.conversation(task.params["name"])
    assert {m.incoming for m in messages} == {True, False}
    for m in messages:
        line = next(line for line in lines if quote(m.text) in line)
        assert line.endswith('"received"' if m.incoming else '"sent"'), line


def test_expert_accepts_a_spec_dict() -> None:
    phone = EmulatedPhone()
    task = make_task("switch_setting", 8)
    task.setup(phone)
    assert expert_action(task.to_dict(), phone.screen(), []) == Action(action="open_app", app="Settings")


@pytest.mark.parametrize("expected, given, same", [
    ("24", "24", True), ("24", " 24. ", True), ("−4", "-4", True), ("$12.50", "12.5", True),
    ("3.5", "3.50", True), ("60%", "60", True), ("+1 415 555 0132", "(415) 555-0132", False),
    ("+1 415 555 0132", "+1 (415) 555-0132", True), ("eggs, milk, bread", "Eggs, milk, bread", True),
    ("Orbit S2", "Orbit", False), ("24", None, False), ("24", "25", False),
])
def test_answers_match(expected, given, same) -> None:
    assert answers_match(expected, given) is same


# --- the loop on any Device -------------------------------------------------------------------

class ForwardingDevice(Device):
    """A Device that knows only the phone's outside: the XML dump, a PNG-like image, and the
    input primitives, as AdbDevice does over the adb protocol."""

    def __init__(self, phone: EmulatedPhone) -> None:
        super().__init__()
        self.phone = phone

    def _capture(self) -> Screen:
        return Screen(image=None, elements=parse_dump(self.phone.dump_xml()), size=self.phone.size(),  # type: ignore[arg-type]
                      app=self.phone.current_app)

    def size(self):
        return self.phone.size()

    def tap(self, x, y):
        self.phone.tap(x, y)

    def swipe(self, x1, y1, x2, y2, duration_ms=300):
        self.phone.swipe(x1, y1, x2, y2, duration_ms)

    def key(self, keycode):
        self.phone.key(keycode)

    def input_text(self, text):
        self.phone.input_text(text)

    def launch(self, app):
        self.phone.launch(app)

    def battery(self) -> Battery:
        return self.phone.battery()


def test_the_loop_runs_on_any_device_with_the_phone_behind_it() -> None:
    phone = EmulatedPhone()
    device = ForwardingDevice(phone)
    for task in one_task_per_template(seed=100):
        result = run_episode(device, task, expert_action, phone=phone)
        assert result.success, task.to_dict()
    with pytest.raises(TypeError, match="phone="):
        run_episode(device, one_task_per_template()[0], expert_action)


def test_a_refused_action_is_recorded_not_raised() -> None:
    phone = EmulatedPhone()
    calls = []

    def clumsy(task, screen, history):
        calls.append(1)
        if len(calls) == 1:
            return Action(action="tap", x=9999, y=9999)
        return Action(action="done", status="complete")

    result = run_episode(phone, make_task("switch_setting", 1), clumsy)
    assert result.steps == 2 and "outside" in result.trace[0].error and not result.success


def test_step_budget_ends_an_episode() -> None:
    def dawdle(task, screen, history):  # never the same action twice in a row: not a loop
        return Action(action="wait" if len(history) % 2 == 0 else "back")

    result = run_episode(EmulatedPhone(), make_task("open_app", 1), dawdle, max_steps=4)
    assert (result.steps, result.final, result.success) == (4, None, False)
    assert result.run.status == "step_limit"


def test_the_same_action_on_the_same_screen_three_times_is_a_loop() -> None:
    result = run_episode(EmulatedPhone(), make_task("open_app", 1), lambda t, s, h: Action(action="wait"), max_steps=10)
    assert (result.steps, result.run.status, result.success) == (3, "loop", False)


def test_trace_records_are_one_json_line_per_step() -> None:
    task = make_task("add_alarm", 3)
    result = run_episode(EmulatedPhone(), task, expert_action)
    records = list(trace_records(result))
    assert len(records) == result.steps
    assert [r["step"] for r in records] == list(range(result.steps))
    assert records[0]["previous"] is None and records[0]["observation"].startswith("Screen (com.edgeagent.launcher):")
    assert records[0]["action"] == {"action": "open_app", "app": "Clock"}
    for prev, rec in zip(records, records[1:]):
        assert rec["previous"] == prev["action"]
    assert records[-1]["action"]["action"] == "done"
    for r in records:
        assert set(r) == {"task", "step", "previous", "observation", "action", "success"}
        assert r["task"] == task.to_dict() and r["success"] is True
        Action.from_dict(r["action"])
        json.dumps(r)


# --- phrasings and impossible requests ------------------------------------------------------------

def test_a_seed_gives_the_same_tasks_in_every_phrasing_and_the_pools_never_mix() -> None:
    from android_bridge.emulator.phrasings import HELDOUT, PARAPHRASE, PHRASINGS, TRAIN

    by_mode = {m: generate_tasks(120, seed=9, templates=["all"], phrasing=m) for m in PHRASINGS}
    for m, tasks in by_mode.items():
        assert [(t.template, t.params, t.seed) for t in tasks] == [
            (t.template, t.params, t.seed) for t in by_mode["template"]], m
    assert set(TRAIN) == set(HELDOUT) == set(PARAPHRASE) == set(TEMPLATES)
    for name in TEMPLATES:
        assert not set(TRAIN[name]) & set(HELDOUT[name]), name
        assert not set(PARAPHRASE[name]) & (set(TRAIN[name]) | set(HELDOUT[name])), name
        assert TEMPLATES[name].instruction not in set(HELDOUT[name]) | set(PARAPHRASE[name])
    paraphrased = {t.instruction for t in by_mode["paraphrase"]}
    assert not paraphrased & {t.instruction for t in by_mode["heldout"]}
    trained = {t.instruction for m in ("template", "train") for t in generate_tasks(600, seed=9, templates=["all"], phrasing=m)}
    for mode in ("heldout", "paraphrase"):  # their wordings do not turn up in training data
        unseen = {t.instruction for t in by_mode[mode]}
        assert len(unseen - trained) >= 0.9 * len(unseen), mode
    assert sum(a.instruction != b.instruction for a, b in zip(by_mode["template"], by_mode["heldout"])) >= 110


# Distinctive words of the unseen pools' wordings: a training wording carrying one would teach
# the very verb or frame the held-out (or the validation paraphrase) figure is meant to test.
HELDOUT_MARKERS = ("flip", "get me up", "stick", "drop", "store", "let ", "jot", "tack", "throw", "figure",
                   "load", "bring", "pick up", "write back", "get back", "talk to", "address book", "click",
                   "online", "make a call", "anymore", "no longer", "i want", "i'd like", "show me", "check")
PARAPHRASE_MARKERS = ("have ", "shoot", "extend", "head to", "shop for", "alarm me", "call up", "on the phone",
                      "out of my contacts", "slider", "switched", "priced", "contains", "together with",
                      "and also", "go into", "open up")


def test_the_broad_pool_adds_wordings_without_the_unseen_pools_words() -> None:
    """``broad`` draws from TRAIN and BROAD; ``train`` is unchanged by BROAD (the data sets made
    with it stay reproducible), and BROAD shares no wording and no distinctive verb or frame
    with the held-out or the validation-paraphrase pool."""
    from android_bridge.emulator.phrasings import BROAD, BROAD_STYLES, HELDOUT, PARAPHRASE, TRAIN, VAL_STYLES, HELDOUT_STYLES

    assert set(BROAD) == set(TEMPLATES)
    for name, wordings in BROAD.items():
        assert len(wordings) >= 3, name
        assert not set(wordings) & (set(HELDOUT[name]) | set(PARAPHRASE[name]) | set(TRAIN[name])), name
        for w in wordings:
            low = w.lower()
            assert not [m for m in HELDOUT_MARKERS + PARAPHRASE_MARKERS if m in low], (name, w)
    tasks = {m: generate_tasks(400, seed=12, templates=["all"], phrasing=m) for m in ("train", "broad")}
    broad_only = {w.lower() for ws in BROAD.values() for w in ws}
    assert not any(t.instruction.lower() in broad_only for t in tasks["train"])
    assert sum(a.instruction != b.instruction for a, b in zip(tasks["train"], tasks["broad"])) >= 200
    samples = ("Call Ana Lopez", "What is the total of my cart?")
    made = {style(s) for s in samples for pair in BROAD_STYLES for style in pair}
    unseen = {style(s) for s in samples for pair in VAL_STYLES + HELDOUT_STYLES for style in pair}
    assert not made & unseen


def test_validation_and_held_out_styles_are_not_training_styles() -> None:
    """A style that wraps a request (a greeting, "Would you ...?", "... pls") is in one pool only;
    what pools share is the bare wording and its lower case (the wording itself is then held out)."""
    from android_bridge.emulator.phrasings import HELDOUT_STYLES, TRAIN_STYLES, VAL_STYLES

    samples = ("Call Ana Lopez", "Set an alarm for 7:30", "What is the total of my cart?")

    def outputs(styles):
        return {style(s) for s in samples for pair in styles for style in pair} - {
            t for s in samples for t in (s, s[:1].lower() + s[1:])}

    trained = outputs(TRAIN_STYLES)
    assert not trained & outputs(VAL_STYLES) and not trained & outputs(HELDOUT_STYLES)
    assert not outputs(VAL_STYLES) & outputs(HELDOUT_STYLES)


def test_every_phrasing_keeps_the_words_a_model_must_type_copyable() -> None:
    from edgeagent.agent.policy import text_choices

    phone = EmulatedPhone()
    for mode in ("train", "broad", "val", "paraphrase", "heldout"):
        for task in generate_tasks(150, seed=4, templates=["all"], phrasing=mode):
            result = run_episode(phone, task, expert_action, 30)
            assert result.success, (mode, task.instruction)
            for step in result.trace:
                if step.action["action"] == "type":
                    text = step.action["text"]
                    assert text in text_choices(task.instruction), (mode, task.instruction, text)


def test_impossible_requests_are_answered_infeasible_with_nothing_changed() -> None:
    from android_bridge.emulator.tasks import TEMPLATE_GROUPS

    impossible = [t for t in TEMPLATES.values() if TEMPLATE_GROUPS["impossible"](t)]
    assert len(impossible) >= 9
    phone = EmulatedPhone()
    tasks = generate_tasks(40, seed=3, templates=["impossible"], phrasing="heldout")
    assert {t.template for t in tasks} == {t.name for t in impossible}
    for task in tasks:
        result = run_episode(phone, task, expert_action, 30)
        assert result.success and result.final.status == "infeasible", task.instruction
        # a "complete" claim, or any change to the phone, fails the task
        assert not task.succeeded(phone, Action(action="done", status="complete"))

def test_a_bad_alarm_time_is_refused_by_the_picker_before_the_expert_gives_up() -> None:
    """The alarm list is where every feasible alarm task starts: the expert answers a bad time
    only on the picker showing its error, so the list itself never means "infeasible" (the
    SmolLM2 agent gave up on feasible alarms there, 4 of 4 on validation tasks)."""
    for task in generate_tasks(12, seed=5, templates=["alarm_bad_time"]):
        phone = EmulatedPhone()
        result = run_episode(phone, task, expert_action, 30)
        assert result.success and result.final.status == "infeasible", task.instruction
        last = result.trace[-1]
        assert "Enter an hour 0-23 and a minute 0-59" in last.observation, task.instruction
        typed = [s.action["text"] for s in result.trace if s.action["action"] == "type"]
        assert ":".join(typed) == task.params["time"]  # the time as asked, hour then minute


def test_a_brightness_past_100_is_refused_by_the_level_editor_after_the_same_steps_as_a_feasible_one() -> None:
    """Refused from the request alone at step 0, an out-of-range level taught the SmolLM2 agent
    that "Set the screen brightness to N%" means infeasible for every N. The expert now takes
    the feasible task's steps (Display, the level's editor, the level typed, Set) and answers
    from the editor's error; the phone's settings stay as they were."""
    same_steps = ["open_app", "tap", "tap", "type", "tap", "done"]
    for task in generate_tasks(10, seed=6, templates=["brightness_out_of_range"]):
        result = run_episode(EmulatedPhone(), task, expert_action, 30)  # success: the settings unchanged
        assert result.success and result.final.status == "infeasible", task.instruction
        assert "Enter a level from 0 to 100" in result.trace[-1].observation
        typed = [s.action["text"] for s in result.trace if s.action["action"] == "type"]
        assert typed == [f"{task.params['level']}%"]
        assert [s.action["action"] for s in result.trace] == same_steps
    for task in generate_tasks(10, seed=6, templates=["set_brightness"]):
        phone = EmulatedPhone()
        result = run_episode(phone, task, expert_action, 30)
        assert result.success and result.final.status == "complete", task.instruction
        assert [s.action["action"] for s in result.trace] == same_steps
        assert phone.world.settings.brightness == task.params["level"]


def test_the_level_editor_refuses_what_is_not_a_level_and_takes_0_and_100() -> None:
    from android_bridge.emulator.apps.settings import SettingsApp

    phone = EmulatedPhone()
    settings = SettingsApp(phone)
    settings.go("display")
    settings.go("brightness")
    for typed, ok in (("101", False), ("", False), ("0", True), ("100", True)):
        settings.top.fields["brightness_level"] = typed
        settings.top.notice = ""
        settings._set_typed_brightness()
        if ok:
            assert phone.world.settings.brightness == int(typed) and settings.top.name == "display"
            settings.go("brightness")
        else:
            assert settings.top.notice == "Enter a level from 0 to 100" and settings.top.name == "brightness"


# First words of the command wordings that are imperative verbs; a new wording opening with a
# word in neither this set nor phrasings.NOT_IMPERATIVE must be classified here first.
IMPERATIVES = {
    "Add", "Adjust", "Answer", "Append", "Bring", "Browse", "Buy", "Calculate", "Call", "Cancel",
    "Change", "Check", "Clear", "Compute", "Count", "Create", "Delete", "Dial", "Dim", "Do", "Drop",
    "Erase", "Figure", "Find", "Flip", "Get", "Give", "Go", "Google", "Jot", "Launch", "Let", "Load",
    "Look", "Make", "Message", "Navigate", "Note", "Open", "Order", "Phone", "Pick", "Place",
    "Purchase", "Put", "Read", "Remove", "Reply", "Respond", "Ring", "Run", "Save", "Schedule",
    "Search", "Send", "Set", "Show", "Start", "Stick", "Store", "Switch", "Tack", "Take", "Tell",
    "Text", "Throw", "Have", "Move", "Shoot", "Extend", "Head", "Shop", "Toggle", "Trash", "Turn", "Update", "Use", "Visit", "Wake", "Web", "Wipe",
    "Work", "Write", "Connect", "Ensure", "Keep", "Kill", "Leave", "Pull", "Purge", "Query", "Solve", "See"}


def test_a_verb_frame_wraps_only_a_wording_that_opens_with_a_verb() -> None:
    """"Would you ...?" on "Brightness to 60%" reads "Would you brightness to 60%?", and on
    "Could you flip Wi-Fi off" "Could you could you ...": no user writes that, so such wordings
    get only their pool's other styles."""
    from android_bridge.emulator.phrasings import BROAD, HELDOUT, NOT_IMPERATIVE, PARAPHRASE, TRAIN, takes_verb_frame

    wordings = {w for pool in (TRAIN, BROAD, HELDOUT, PARAPHRASE) for ws in pool.values() for w in ws} | {
        t.instruction for t in TEMPLATES.values()}
    for w in wordings:
        if "?" in w:
            continue
        first = w.split()[0]
        assert first in IMPERATIVES or first in NOT_IMPERATIVE, f"classify the first word of {w!r}"
        assert takes_verb_frame(w) == (first in IMPERATIVES)
    frames = ("Would you ", "Could you ", "Can you ", "Will you ", "I'd like you to ", "I need you to ",
              "Go ahead and ", "Help me ", "Kindly ", "Please ")
    for mode in ("train", "broad", "val", "paraphrase", "heldout"):
        for task in generate_tasks(800, seed=5, templates=["all"], phrasing=mode):
            for frame in frames:
                if task.instruction.startswith(frame):
                    rest = task.instruction[len(frame):]
                    assert rest.split()[0].capitalize() in IMPERATIVES | {"Please"}, (mode, task.instruction)
