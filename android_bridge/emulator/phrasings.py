"""How people word the emulator's tasks: many phrasings per template, some held out.

A model trained on one wording per template learns the wording, not the request (the 5M
built-in model: 92.5 % on template wording, 12.5 % on natural paraphrases). So every template
has other wordings, in two pools that never mix:

- ``TRAIN``: wordings training data may use (with the template's own, ``Template.instruction``);
- ``HELDOUT``: wordings no training data may use; task success on them is reported apart.

On top of a wording comes a *style* (politeness, lower case, a greeting), again in disjoint
pools: training styles, validation styles (for choosing checkpoints) and held-out styles.
Phrasing modes, as ``tasks``/``traces``/``demo --phrasing`` take them:

==========  ===========================================  ==========================
mode        wording                                      style
==========  ===========================================  ==========================
template    the template's own                           none
train       the template's own or a ``TRAIN`` one         a training style
val         a ``TRAIN`` one                               a validation style
heldout     a ``HELDOUT`` one                             a held-out style
==========  ===========================================  ==========================

Every wording keeps each parameter verbatim (``{name}``, ``"{text}"``, ``{a} {op} {b}``):
the copy grammar lets a model type only spans of the instruction, so the words it must type
are always there to copy.
"""

from __future__ import annotations

import random
from collections.abc import Callable

PHRASINGS = ("template", "train", "val", "heldout")

# template name -> wordings. A question stays a question: a wording with a "?" gets the
# question styles, which do not wrap it in "Please ...".
TRAIN: dict[str, tuple[str, ...]] = {
    "switch_setting": ("Switch {state} {setting}", "Can you turn {setting} {state}", "{setting} {state} please",
                       "Put {setting} {state}"),
    "switch_pair": ("Switch {state} both Wi-Fi and Bluetooth", "Turn Wi-Fi and Bluetooth {state}",
                    "Bluetooth and Wi-Fi {state}"),
    "dark_mode": ("Switch dark mode {state}", "Turn dark mode {state}", "Dark mode {state}, please"),
    "set_brightness": ("Change the brightness to {level}%", "Make the screen brightness {level}%",
                       "Brightness to {level}%"),
    "brightness_question": ("How bright is the screen set?", "What's the brightness level?",
                            "Tell me the current screen brightness"),
    "model_question": ("Which phone model is this?", "What model is my phone?", "Tell me this phone's model name"),
    "add_alarm": ("Wake me up at {time}", "Create an alarm at {time}", "I need an alarm for {time}",
                  "New alarm {time}"),
    "add_alarm_labelled": ("Create an alarm at {time} called {label}", "Alarm at {time} with the label {label}",
                           "Add a {time} alarm labelled {label}"),
    "delete_alarm": ("Remove my {time} alarm", "Get rid of the alarm at {time}", "Delete alarm {time}"),
    "delete_missing_alarm": ("Remove my {time} alarm", "Get rid of the alarm at {time}", "Delete alarm {time}"),
    "toggle_alarm": ("Switch the {time} alarm {state}", "Turn the alarm at {time} {state}",
                     "{time} alarm {state}"),
    "count_alarms": ("How many alarms do I have?", "Count my alarms", "Tell me how many alarms are set"),
    "add_contact": ("Save {name} as a contact, number {phone}", "New contact: {name}, {phone}",
                    "Create a contact for {name} with phone {phone}"),
    "contact_phone_question": ("What's the number for {name}?", "Look up {name}'s number",
                               "Find the phone number of {name}"),
    "call_contact": ("Phone {name}", "Give {name} a call", "Dial {name}", "Ring {name}"),
    "call_missing_contact": ("Phone {name}", "Give {name} a call", "Dial {name}", "Ring {name}"),
    "delete_contact": ("Remove {name} from contacts", "Delete the contact {name}", "Erase {name} from my contacts"),
    "send_message": ('Text {name} "{text}"', 'Message {name}: "{text}"', 'Send {name} the message "{text}"'),
    "message_missing_contact": ('Text {name} "{text}"', 'Message {name}: "{text}"',
                                'Send {name} the message "{text}"'),
    "reply_in_thread": ('Answer {name} with "{text}"', 'Respond to {name}\'s last text: "{text}"',
                        'Reply to {name} saying "{text}"'),
    "last_message_question": ("What did {name} last text me?", "Read me {name}'s latest message",
                              "What was {name}'s last message?"),
    "create_note": ('New note "{title}": "{body}"', 'Make a note called "{title}" saying "{body}"',
                    'Write a note "{title}" with "{body}" in it'),
    "append_note": ('Append "{text}" to my note "{title}"', 'Put "{text}" at the end of the "{title}" note',
                    'In the note "{title}", add "{text}" at the end'),
    "delete_note": ('Remove my note "{title}"', 'Get rid of the "{title}" note', 'Trash the note "{title}"'),
    "note_question": ('Read me the note "{title}"', 'What is in the note "{title}"?',
                      'Tell me what the "{title}" note says'),
    "calc_binary": ("What is {a} {op} {b}? Use the calculator", "Work out {a} {op} {b} on the calculator",
                    "Calculator: {a} {op} {b}"),
    "calc_chain": ("Calculate {a} {op1} {b} {op2} {c} on the calculator", "Work out {a} {op1} {b} {op2} {c}",
                   "What's {a} {op1} {b} {op2} {c}? Use the calculator"),
    "calc_percent": ("What is {percent}% of {amount}? Use the calculator", "Work out {percent}% of {amount}",
                     "Calculate {percent}% of {amount} on the calculator"),
    "web_search": ('Look up "{query}" on the web', 'Google "{query}"', 'Do a web search for "{query}"'),
    "open_result": ('Look up "{query}" and open "{title}"', 'Search "{query}", then open the result "{title}"',
                    'Find "{query}" on the web and open "{title}"'),
    "open_website": ("Go to {site}", "Visit {site}", "Take me to the website {site}"),
    "buy_one": ("Buy {product}", "Order {product} for me", "Purchase {product} from the Shop",
                "Check out with {product}"),
    "buy_missing_product": ("Buy {product}", "Order {product} for me", "Purchase {product} from the Shop",
                            "Check out with {product}"),
    "buy_two": ("Order {qty1} {product1} and {qty2} {product2}", "Purchase {qty1} {product1} plus {qty2} {product2}",
                "Get me {qty1} {product1} and {qty2} {product2} from the shop"),
    "add_to_cart": ("Put {product} in my cart", "Add {product} to the basket", "Cart {product}"),
    "price_question": ("What does {product} cost?", "How much is {product}?", "What's the price of {product}?"),
    "remove_from_cart": ("Take {product} out of my cart", "Delete {product} from the cart",
                         "Remove {product} from the basket"),
    "cart_total_question": ("How much is in my cart in total?", "What does my cart come to?",
                            "Tell me my cart total"),
    "open_app": ("Launch {app}", "Start the {app} app", "Go to {app}", "Open {app}"),
    "switch_missing_setting": ("Switch {state} {setting}", "Can you turn {setting} {state}",
                               "{setting} {state} please"),
    "open_missing_app": ("Launch {app}", "Start the {app} app", "Go to {app}", "Open {app}"),
    "brightness_out_of_range": ("Change the brightness to {level}%", "Make the screen brightness {level}%",
                                "Brightness to {level}%"),
    "contact_phone_missing": ("What's the number for {name}?", "Look up {name}'s number",
                              "Find the phone number of {name}"),
    "alarm_bad_time": ("Wake me up at {time}", "Create an alarm at {time}", "I need an alarm for {time}"),
}

HELDOUT: dict[str, tuple[str, ...]] = {
    "switch_setting": ("I want {setting} {state}", "Could you flip {setting} {state}"),
    "switch_pair": ("I need both Wi-Fi and Bluetooth {state}", "Flip Wi-Fi and Bluetooth {state}"),
    "dark_mode": ("I'd like dark mode {state}", "Flip dark mode {state}"),
    "set_brightness": ("Adjust the brightness so it's at {level}%", "I want the display at {level}% brightness"),
    "brightness_question": ("What level is my brightness at?", "Check the display brightness for me"),
    "model_question": ("What phone do I have?", "Find out the model of this device"),
    "add_alarm": ("Get me up at {time}", "Set my alarm to {time}"),
    "add_alarm_labelled": ("I need a {time} alarm named {label}", "Set {time} as an alarm and call it {label}"),
    "delete_alarm": ("I don't need the {time} alarm anymore, delete it", "Clear the {time} alarm"),
    "delete_missing_alarm": ("I don't need the {time} alarm anymore, delete it", "Clear the {time} alarm"),
    "toggle_alarm": ("Flip the {time} alarm {state}", "I want my {time} alarm {state}"),
    "count_alarms": ("How many alarms are there on my phone?", "Check how many alarms I've got"),
    "add_contact": ("Add {name} to my contacts, their number is {phone}", "Store {phone} as {name}"),
    "contact_phone_question": ("I need {name}'s phone number", "Can you get me the number of {name}?"),
    "call_contact": ("Make a call to {name}", "I want to talk to {name} on the phone"),
    "call_missing_contact": ("Make a call to {name}", "I want to talk to {name} on the phone"),
    "delete_contact": ("I don't need {name} in my contacts anymore", "Take {name} out of my address book"),
    "send_message": ('Let {name} know "{text}"', 'Drop {name} a text saying "{text}"'),
    "message_missing_contact": ('Let {name} know "{text}"', 'Drop {name} a text saying "{text}"'),
    "reply_in_thread": ('Write back to {name}: "{text}"', 'Get back to {name} with "{text}"'),
    "last_message_question": ("Check what {name} wrote to me last", "What's the most recent thing {name} sent me?"),
    "create_note": ('Jot down "{body}" in a new note titled "{title}"', 'I want a note "{title}" containing "{body}"'),
    "append_note": ('Tack "{text}" onto the note "{title}"', 'Add "{text}" to my "{title}" note'),
    "delete_note": ('I no longer need the note "{title}"', 'Throw away the note "{title}"'),
    "note_question": ('What did I write in "{title}"?', 'Show me what my "{title}" note says'),
    "calc_binary": ("Figure out {a} {op} {b} with the calculator", "I need {a} {op} {b} from the calculator"),
    "calc_chain": ("Figure out {a} {op1} {b} {op2} {c} with the calculator", "I need the result of {a} {op1} {b} {op2} {c}"),
    "calc_percent": ("Figure out {percent}% of {amount}", "How much is {percent}% of {amount}? Calculate it"),
    "web_search": ('Find "{query}" online', 'Search online for "{query}"'),
    "open_result": ('Search the web for "{query}" and click "{title}"', 'Find "{query}" online and go to "{title}"'),
    "open_website": ("Load {site} in the browser", "Bring up {site}"),
    "buy_one": ("I want to buy {product}", "Get me {product} and pay for it"),
    "buy_missing_product": ("I want to buy {product}", "Get me {product} and pay for it"),
    "buy_two": ("I'd like {qty1} {product1} and {qty2} {product2}, buy them", "Pick up {qty1} {product1} and {qty2} {product2} and check out"),
    "add_to_cart": ("Stick {product} in the cart", "I'd like {product} in my cart"),
    "price_question": ("Check the price of {product}", "What would {product} cost me?"),
    "remove_from_cart": ("I don't want {product} in my cart anymore", "Drop {product} from my cart"),
    "cart_total_question": ("What's my cart worth?", "Add up my cart for me"),
    "open_app": ("Bring up {app}", "Show me the {app} app"),
    "switch_missing_setting": ("I want {setting} {state}", "Could you flip {setting} {state}"),
    "open_missing_app": ("Bring up {app}", "Show me the {app} app"),
    "brightness_out_of_range": ("Adjust the brightness so it's at {level}%", "I want the display at {level}% brightness"),
    "contact_phone_missing": ("I need {name}'s phone number", "Can you get me the number of {name}?"),
    "alarm_bad_time": ("Get me up at {time}", "Set my alarm to {time}"),
}


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s  # keep "Wi-Fi", "NFC"


def _strip_end(s: str) -> str:
    return s.rstrip(".!?")


Style = Callable[[str], str]

# (command style, question style): a question gets no "please ... " wrapper that breaks it.
TRAIN_STYLES: tuple[tuple[Style, Style], ...] = (
    (lambda s: s, lambda s: s),
    (lambda s: "Please " + _lower_first(s), lambda s: s),
    (lambda s: _strip_end(s) + ", please", lambda s: s),
    (lambda s: _lower_first(s), lambda s: _lower_first(s)),
    (lambda s: "Can you " + _lower_first(_strip_end(s)) + "?", lambda s: "Hey, " + _lower_first(s)),
    # What else people put around a request: fillers before and after the words to act on,
    # which a model must learn to leave out of what it types (none of them a validation or
    # held-out style; tests/bridge/test_tasks.py checks the pools stay apart).
    (lambda s: "Hey, " + _lower_first(s), lambda s: "Quick question: " + _lower_first(s)),
    (lambda s: "I need you to " + _lower_first(_strip_end(s)), lambda s: "OK, " + _lower_first(s)),
    (lambda s: "Go ahead and " + _lower_first(_strip_end(s)), lambda s: _lower_first(_strip_end(s)) + "??"),
    (lambda s: _strip_end(s) + " now", lambda s: "Hello. " + s),
    (lambda s: "Will you " + _lower_first(_strip_end(s)) + "?", lambda s: "Tell me this: " + _lower_first(s)),
    (lambda s: "Help me " + _lower_first(_strip_end(s)), lambda s: "Hmm, " + _lower_first(s)),
    (lambda s: _lower_first(_strip_end(s)) + " asap", lambda s: "So " + _lower_first(s)),
    (lambda s: "Kindly " + _lower_first(s), lambda s: "Hey there, " + _lower_first(s)),
    (lambda s: _strip_end(s) + " when you get a chance", lambda s: "Just curious: " + _lower_first(s)),
    (lambda s: "Can you please " + _lower_first(_strip_end(s)) + "?", lambda s: "Wondering: " + _lower_first(s)),
    (lambda s: "OK, " + _lower_first(s), lambda s: "Question: " + _lower_first(s)),
    (lambda s: _strip_end(s) + ". Thank you!", lambda s: s + " Thank you!"),
)
VAL_STYLES: tuple[tuple[Style, Style], ...] = (
    (lambda s: "Would you " + _lower_first(_strip_end(s)) + "?", lambda s: "Quick one: " + _lower_first(s)),
    (lambda s: _lower_first(_strip_end(s)) + " pls", lambda s: _lower_first(s)),
)
HELDOUT_STYLES: tuple[tuple[Style, Style], ...] = (
    (lambda s: s, lambda s: s),
    (lambda s: "Could you " + _lower_first(_strip_end(s)) + " for me?", lambda s: "Hi! " + s),
    (lambda s: "I'd like you to " + _lower_first(_strip_end(s)), lambda s: _lower_first(s)),
    (lambda s: _lower_first(_strip_end(s)) + ", thanks", lambda s: "Do you know: " + _lower_first(s)),
)


def phrase(template_name: str, own: str, params: dict, mode: str, rng: random.Random) -> str:
    """The instruction of one task in phrasing ``mode`` (see the module docstring); ``own`` is
    the template's own wording (a ``str.format`` string over ``params``)."""
    if mode not in PHRASINGS:
        raise ValueError(f"unknown phrasing {mode!r}; known: {', '.join(PHRASINGS)}")
    if mode == "template":
        return own.format(**params)
    if mode == "heldout":
        wordings, styles = HELDOUT.get(template_name, ()), HELDOUT_STYLES
    elif mode == "val":
        wordings, styles = TRAIN.get(template_name, ()), VAL_STYLES
    else:
        wordings, styles = (own, *TRAIN.get(template_name, ())), TRAIN_STYLES
    wording = rng.choice(wordings or (own,))
    command, question = rng.choice(styles)
    text = wording.format(**params)
    return (question if "?" in text else command)(text)
