"""How people word the emulator's tasks: many phrasings per template, some held out.

A model trained on one wording per template learns the wording, not the request (the 5M
built-in model: 92.5 % on template wording, 12.5 % on natural paraphrases). So every template
has other wordings, in two pools that never mix:

- ``TRAIN``: wordings training data may use (with the template's own, ``Template.instruction``);
- ``BROAD``: more wordings training data may use, in the ``broad`` mode only (``train`` stays
  as the data sets made with it had it);
- ``HELDOUT``: wordings no training data may use; task success on them is reported apart;
- ``PARAPHRASE``: wordings no training data may use either, for choosing checkpoints: the ``val``
  mode rewords only the *style* of training wordings, so it cannot tell how a model takes a
  sentence it has never seen, which is what the held-out figure measures.

On top of a wording comes a *style* (politeness, lower case, a greeting), again in disjoint
pools: training styles, validation styles (for choosing checkpoints) and held-out styles.
Phrasing modes, as ``tasks``/``traces``/``demo --phrasing`` take them:

==========  ===========================================  ==========================
mode        wording                                      style
==========  ===========================================  ==========================
template    the template's own                           none
train       the template's own or a ``TRAIN`` one         a training style
broad       the template's own, a ``TRAIN`` or ``BROAD`` one  a training or ``BROAD_STYLES`` style
val         a ``TRAIN`` one                               a validation style
paraphrase  a ``PARAPHRASE`` one                          a validation style
heldout     a ``HELDOUT`` one                             a held-out style
==========  ===========================================  ==========================

Every wording keeps each parameter verbatim (``{name}``, ``"{text}"``, ``{a} {op} {b}``):
the copy grammar lets a model type only spans of the instruction, so the words it must type
are always there to copy.
"""

from __future__ import annotations

import random
from collections.abc import Callable

PHRASINGS = ("template", "train", "broad", "val", "paraphrase", "heldout")

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


# More training wordings (session 4): other verbs, word orders and indirect requests, so a
# model learns the request rather than a handful of sentences. Written apart from HELDOUT:
# none of its wordings or its distinctive verbs ("flip", "get me up", "stick", "drop", "store")
# appear here, and tests/bridge/test_tasks.py keeps the pools disjoint.
MORE_TRAIN: dict[str, tuple[str, ...]] = {
    "switch_setting": ("Set {setting} to {state}", "{setting} should be {state}",
                       "Make sure {setting} is {state}", "Toggle {setting} {state}"),
    "switch_pair": ("Set Wi-Fi and Bluetooth both {state}", "Both Bluetooth and Wi-Fi {state}, please",
                    "Make sure Wi-Fi and Bluetooth are {state}", "Wi-Fi {state} and Bluetooth {state} too"),
    "dark_mode": ("Set dark mode {state}", "Make sure dark mode is {state}", "Night theme: dark mode {state}",
                  "Toggle dark mode {state}"),
    "set_brightness": ("Set brightness at {level}%", "Screen brightness {level}%, please",
                       "Dim or brighten the screen to {level}%", "Put the brightness on {level}%"),
    "brightness_question": ("What is the brightness at right now?", "How bright is my display?",
                            "Brightness: what's it set to?"),
    "model_question": ("What's the model of this phone?", "Which device model am I using?",
                       "Look up the phone model in settings"),
    "add_alarm": ("Alarm for {time}, please", "Add an alarm at {time}", "Make me an alarm for {time}",
                  "I have to be up at {time}, set an alarm", "Put an alarm on {time}", "Schedule an alarm at {time}"),
    "add_alarm_labelled": ("Make a {time} alarm with label {label}", "Alarm {time}, label it {label}",
                           "Add an alarm for {time} and label it {label}", "Create a {time} alarm titled {label}"),
    "delete_alarm": ("Cancel my {time} alarm", "Erase the {time} alarm", "Take away the alarm at {time}",
                     "The {time} alarm can go, delete it"),
    "toggle_alarm": ("Set the {time} alarm {state}", "Make the alarm for {time} {state}",
                     "The {time} alarm should be {state}", "Toggle my {time} alarm {state}"),
    "count_alarms": ("What's the number of alarms I have?", "How many alarms have I set?",
                     "Count the alarms in the Clock app"),
    "add_contact": ("Add a contact {name} with number {phone}", "Put {name} in my contacts with {phone}",
                    "Save the number {phone} under {name}"),
    "contact_phone_question": ("What's {name}'s phone number?", "Tell me {name}'s number",
                               "Which number do I have for {name}?"),
    "call_contact": ("Call {name} for me", "Start a call with {name}", "Place a call to {name}",
                     "Ring up {name}"),
    "delete_contact": ("Remove the contact {name}", "Delete {name} from my contacts", "Erase the contact {name}",
                       "Wipe {name} from my contact list"),
    "send_message": ('Send a text to {name} saying "{text}"', 'Message {name} "{text}"',
                     'Tell {name} "{text}" by text', 'Write {name} a message: "{text}"'),
    "reply_in_thread": ('Reply "{text}" to {name}', 'Answer {name}\'s message with "{text}"',
                        'Send {name} a reply: "{text}"', 'Respond to {name} with "{text}"'),
    "last_message_question": ("What did {name} send me last?", "Tell me the last text from {name}",
                              "What's the latest message from {name}?", "Read {name}'s last message"),
    "create_note": ('Create a note "{title}" that says "{body}"', 'Add a new note "{title}" with "{body}"',
                    'Note down "{body}" under the title "{title}"'),
    "append_note": ('Add "{text}" to the end of the note "{title}"', 'Append "{text}" to "{title}"',
                    'Update my note "{title}" with "{text}" at the end'),
    "delete_note": ('Delete the note "{title}"', 'Erase my note "{title}"', 'Remove the "{title}" note'),
    "note_question": ('What does my note "{title}" say?', 'Open the note "{title}" and tell me what it says',
                      'Read the "{title}" note to me'),
    "calc_binary": ("Compute {a} {op} {b} with the calculator", "Use the calculator for {a} {op} {b}",
                    "{a} {op} {b} on the calculator, please", "How much is {a} {op} {b}? Calculator please"),
    "calc_chain": ("Compute {a} {op1} {b} {op2} {c} with the calculator", "Use the calculator: {a} {op1} {b} {op2} {c}",
                   "How much is {a} {op1} {b} {op2} {c}? Calculate it on the calculator"),
    "calc_percent": ("Compute {percent}% of {amount}", "Use the calculator for {percent}% of {amount}",
                     "What's {percent}% of {amount}?", "Calculator: {percent}% of {amount}"),
    "web_search": ('Search the web for "{query}"', 'Search for "{query}"', 'Look "{query}" up online',
                   'Run a web search on "{query}"'),
    "open_result": ('Search for "{query}" and open "{title}"', 'Look up "{query}", then tap "{title}"',
                    'Web search "{query}" and open the result "{title}"'),
    "open_website": ("Open {site}", "Open the website {site}", "Navigate to {site}", "Browse to {site}"),
    "buy_one": ("Get {product} from the Shop and check out", "Buy me {product}", "Place an order for {product}",
                "I need {product}, buy it"),
    "buy_two": ("Buy me {qty1} {product1} and {qty2} {product2}", "Place an order for {qty1} {product1} and {qty2} {product2}",
                "Check out with {qty1} {product1} and {qty2} {product2}", "I need {qty1} {product1} and {qty2} {product2}, buy them"),
    "add_to_cart": ("Put {product} in the cart", "Add {product} to the cart, don't check out",
                    "Place {product} in my shopping cart", "Add {product} to my basket"),
    "price_question": ("Tell me the price of {product}", "What is {product}'s price?", "How much does {product} cost?"),
    "remove_from_cart": ("Remove {product} from my cart", "Take {product} out of the basket",
                         "Get {product} out of my cart", "Delete {product} from my shopping cart"),
    "cart_total_question": ("What's the total of my cart?", "How much does my cart cost?",
                            "What is my cart's total?"),
    "open_app": ("Open the {app} app", "Launch the {app} app", "Take me to {app}", "Switch to {app}"),
    "switch_missing_setting": ("Set {setting} to {state}", "Make sure {setting} is {state}", "Toggle {setting} {state}"),
    "brightness_out_of_range": ("Set brightness at {level}%", "Screen brightness {level}%, please",
                                "Put the brightness on {level}%"),
    "alarm_bad_time": ("Alarm for {time}, please", "Add an alarm at {time}", "Make me an alarm for {time}",
                       "Put an alarm on {time}"),
}
# An impossible request is worded like its feasible twin: the wording must not give it away.
# A pool that words an impossible template itself (a subset that suits it) keeps its own.
TWINS = (
    ("delete_missing_alarm", "delete_alarm"), ("call_missing_contact", "call_contact"),
    ("message_missing_contact", "send_message"), ("buy_missing_product", "buy_one"),
    ("open_missing_app", "open_app"), ("contact_phone_missing", "contact_phone_question"),
    ("switch_missing_setting", "switch_setting"), ("brightness_out_of_range", "set_brightness"),
    ("alarm_bad_time", "add_alarm"),
)


def _word_twins(pool: dict[str, tuple[str, ...]]) -> None:
    """Give each impossible template its feasible twin's wordings, unless ``pool`` words it."""
    for missing, twin in TWINS:
        pool.setdefault(missing, pool[twin])


_word_twins(MORE_TRAIN)
for _name, _more in MORE_TRAIN.items():
    TRAIN[_name] = TRAIN.get(_name, ()) + tuple(w for w in _more if w not in TRAIN.get(_name, ()))


# Validation paraphrases (session 2026-12-03): written apart from both pools above, and without
# HELDOUT's distinctive verbs and frames, so choosing a checkpoint on them tells how it takes new
# sentences without looking at the test's. tests/bridge/test_tasks.py keeps the three pools disjoint.
PARAPHRASE: dict[str, tuple[str, ...]] = {
    "switch_setting": ("Get {setting} switched {state}", "Have {setting} {state}"),
    "switch_pair": ("Get Wi-Fi and Bluetooth switched {state}", "Wi-Fi plus Bluetooth, both {state}"),
    "dark_mode": ("Get dark mode switched {state}", "Change dark mode to {state}"),
    "set_brightness": ("Change the display brightness to {level}%", "Move the brightness slider to {level}%"),
    "brightness_question": ("What's the display brightness?", "Find out the screen brightness"),
    "model_question": ("What's this phone called?", "Find the model name of my phone"),
    "add_alarm": ("Add a {time} alarm", "Alarm me at {time}"),
    "add_alarm_labelled": ("New alarm at {time}, label {label}", "Make an alarm for {time} labelled {label}"),
    "delete_alarm": ("Delete my alarm at {time}", "Cancel the alarm set for {time}"),
    "toggle_alarm": ("Switch my alarm at {time} {state}", "Have the {time} alarm {state}"),
    "count_alarms": ("What number of alarms are in the Clock?", "Tell me my alarm count"),
    "add_contact": ("Make a new contact {name}, phone {phone}", "Add {name} as a contact with {phone}"),
    "contact_phone_question": ("Give me {name}'s number", "Which phone number does {name} have?"),
    "call_contact": ("Call up {name}", "Get {name} on the phone"),
    "delete_contact": ("Remove {name} from my contact list", "Get {name} out of my contacts"),
    "send_message": ('Shoot {name} a text: "{text}"', 'Text "{text}" to {name}'),
    "reply_in_thread": ('Reply to {name} with "{text}"', 'Answer {name}: "{text}"'),
    "last_message_question": ("What was the last text from {name}?", "Show me the newest message from {name}"),
    "create_note": ('Start a note "{title}" saying "{body}"', 'Save a note titled "{title}": "{body}"'),
    "append_note": ('Add "{text}" at the end of my "{title}" note', 'Extend the note "{title}" with "{text}"'),
    "delete_note": ('Erase the "{title}" note', 'Delete my "{title}" note'),
    "note_question": ('Tell me what the note "{title}" contains', 'What is written in my note "{title}"?'),
    "calc_binary": ("Do {a} {op} {b} on the calculator", "Find {a} {op} {b} using the calculator"),
    "calc_chain": ("Do {a} {op1} {b} {op2} {c} on the calculator", "Find {a} {op1} {b} {op2} {c} using the calculator"),
    "calc_percent": ("Do {percent}% of {amount} on the calculator", "Find {percent}% of {amount} using the calculator"),
    "web_search": ('Search "{query}" on the web', 'Find web results for "{query}"'),
    "open_result": ('Search for "{query}" and then open "{title}"',
                    'Look for "{query}" on the web and tap the result "{title}"'),
    "open_website": ("Head to {site}", "Open up {site}"),
    "buy_one": ("Buy {product} and check out", "Shop for {product} and pay"),
    "buy_two": ("Buy {qty1} {product1} together with {qty2} {product2}",
                "Order {qty1} {product1} and also {qty2} {product2}"),
    "add_to_cart": ("Place {product} in the cart", "Add {product} to the shopping cart"),
    "price_question": ("What's {product} priced at?", "Find the price of {product}"),
    "remove_from_cart": ("Remove {product} from the shopping cart", "Delete the {product} in my cart"),
    "cart_total_question": ("What's the cart total?", "How much will my cart cost?"),
    "open_app": ("Open up {app}", "Go into the {app} app"),
}
_word_twins(PARAPHRASE)


# A wider training pool (session 2026-12-03 sixth), for ``--phrasing broad`` only, so the
# ``train`` mode's output (and every data set made with it) stays as it was. Validation on
# PARAPHRASE showed the agent failing on *meaning* under verbs it never trained ("get X out of my
# contacts" tapped Call): these wordings add other verbs, a state or a need described instead of a
# command, the object first, a reason around the request. They avoid the HELDOUT and PARAPHRASE
# wordings and their distinctive verbs and frames (tests/bridge/test_tasks.py lists the markers).
BROAD: dict[str, tuple[str, ...]] = {
    "switch_setting": ("Keep {setting} {state} from now on", "{setting} needs to be {state}",
                       "Leave {setting} {state}", "Can {setting} be {state}?", "Go and set {setting} {state}"),
    "switch_pair": ("Wi-Fi and Bluetooth both need to be {state}", "Leave Bluetooth and Wi-Fi {state}",
                    "Can both Wi-Fi and Bluetooth be {state}?", "Settings: Wi-Fi {state}, Bluetooth {state}"),
    "dark_mode": ("Dark mode needs to be {state}", "Leave dark mode {state}", "Can dark mode be {state}?",
                  "The dark theme should be {state}"),
    "set_brightness": ("The screen should be at {level}% brightness", "Brightness needs to be {level}%",
                       "Can the brightness be {level}%?", "Go and set the brightness to {level}%"),
    "brightness_question": ("At what level is the screen brightness?", "Brightness level, please?",
                            "Can you see how bright my screen is set?", "Which brightness is my screen on?"),
    "model_question": ("Which model is this device?", "What kind of phone is this?",
                       "Can you read out this phone's model?", "Model of this phone?"),
    "add_alarm": ("An alarm at {time} would help", "Can I get an alarm at {time}?", "Wake-up alarm: {time}",
                  "Go and add an alarm for {time}", "Ensure an alarm rings at {time}"),
    "add_alarm_labelled": ("Can I get an alarm at {time} labelled {label}?", "Alarm: {time}, label: {label}",
                           "Add an alarm labelled {label} at {time}", "Go and make a {time} alarm called {label}"),
    "delete_alarm": ("The alarm at {time} should be deleted", "Can the {time} alarm be removed?",
                     "Delete the alarm that rings at {time}", "Go and remove the {time} alarm",
                     "Kill the {time} alarm"),
    "toggle_alarm": ("The alarm at {time} needs to be {state}", "Can the {time} alarm be {state}?",
                     "Leave my {time} alarm {state}", "Go and switch the {time} alarm {state}"),
    "count_alarms": ("Alarms: how many are there?", "Can you count how many alarms I have?",
                     "Total number of alarms on this phone?", "Open the Clock and count the alarms"),
    "add_contact": ("Keep {name}'s number {phone} in my contacts", "Contact to add: {name}, {phone}",
                    "Can you add {name} with the number {phone} to my contacts?",
                    "Go and save {name}, number {phone}"),
    "contact_phone_question": ("Can you find {name}'s number?", "Contact {name}: what's the number?",
                               "Number of {name}, please?", "Read me {name}'s phone number"),
    "call_contact": ("Can you call {name}?", "Connect me with {name} by phone", "A call to {name}, please",
                     "Go and call {name}"),
    "delete_contact": ("The contact {name} should be removed", "Can {name} be deleted from contacts?",
                       "Go and delete {name} from the contacts", "Purge {name} from my contacts",
                       "Contacts: remove {name}"),
    "send_message": ('Can you text {name} "{text}"?', 'A message to {name}: "{text}"',
                     'Go and message {name} "{text}"', 'Send "{text}" to {name}'),
    "reply_in_thread": ('There is a message from {name}, reply "{text}"', 'Can you answer {name} with "{text}"?',
                        'Go and reply to {name} with "{text}"', 'My answer to {name} is "{text}"'),
    "last_message_question": ("Can you read me the last thing {name} wrote?", "Last message from {name}: what did it say?",
                              "Open my chat with {name} and read the last message",
                              "Which message did {name} last send?"),
    "create_note": ('Can you make a note "{title}" with "{body}"?', 'A note titled "{title}" saying "{body}", please',
                    'Go and write a note "{title}" saying "{body}"', 'Keep a note "{title}" with "{body}"'),
    "append_note": ('Can you add "{text}" to the end of "{title}"?', 'At the end of note "{title}", write "{text}"',
                    'Go and append "{text}" to the note "{title}"', 'The note "{title}" should end with "{text}"'),
    "delete_note": ('Can the note "{title}" be deleted?', 'The "{title}" note should be deleted',
                    'Go and delete the note "{title}"', 'Purge the note "{title}"'),
    "note_question": ('Can you read me my note "{title}"?', 'Note "{title}": what does it say?',
                      'Open "{title}" in Notes and read it to me', 'What does the "{title}" note contain?'),
    "calc_binary": ("Can you calculate {a} {op} {b}?", "Calculator, {a} {op} {b}", "Go and calculate {a} {op} {b}",
                    "Solve {a} {op} {b} with the calculator"),
    "calc_chain": ("Can you calculate {a} {op1} {b} {op2} {c}?", "Go and calculate {a} {op1} {b} {op2} {c}",
                   "Solve {a} {op1} {b} {op2} {c} with the calculator"),
    "calc_percent": ("Can you calculate {percent}% of {amount}?", "Go and calculate {percent}% of {amount}",
                     "Solve {percent}% of {amount} with the calculator"),
    "web_search": ('Can you search the web for "{query}"?', 'A web search for "{query}", please', 'Go and search "{query}"',
                   'Query the web for "{query}"'),
    "open_result": ('Can you search "{query}" and open "{title}"?', 'Go and search "{query}", open "{title}"',
                    'Results for "{query}" on the web: open "{title}"', 'Query "{query}" and open the page "{title}"'),
    "open_website": ("Can you open {site}?", "Go and open {site}", "Website: {site}", "Pull up {site}"),
    "buy_one": ("Can you buy {product}?", "Go and buy {product}", "I'll take {product}, buy it",
                "Get {product} and complete the order"),
    "buy_two": ("Can you buy {qty1} {product1} and {qty2} {product2}?", "Go and buy {qty1} {product1} and {qty2} {product2}",
                "My order: {qty1} {product1} and {qty2} {product2}, buy it",
                "Get {qty1} {product1} and {qty2} {product2} and complete the order"),
    "add_to_cart": ("Can you add {product} to my cart?", "Go and put {product} in the cart",
                    "My cart needs {product}", "Add {product} to the cart without buying"),
    "price_question": ("Can you find what {product} costs?", "Cost of {product}?",
                       "Price of {product}, please?", "How much would I pay for {product}?"),
    "remove_from_cart": ("Can you remove {product} from my cart?", "Go and remove {product} from the cart",
                         "The {product} should come out of my cart", "Purge {product} from the cart"),
    "cart_total_question": ("Can you add up what's in my cart?", "Cart total, please?",
                            "What will I pay for my cart?", "How much is my cart altogether?"),
    "open_app": ("Can you open {app}?", "Go and open {app}", "App: {app}", "I'll use {app}, open it",
                 "Get {app} up on the screen"),
}
_word_twins(BROAD)


def _lower_first(s: str) -> str:
    if s.startswith("A "):  # the article; "I ..." stays as it is
        return "a " + s[2:]
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s  # keep "Wi-Fi", "NFC"


def _strip_end(s: str) -> str:
    return s.rstrip(".!?")


Style = Callable[[str], str]

# Styles that put a request after a verb frame ("Would you ...?", "I'd like you to ..."): they
# read right only on a wording that opens with an imperative verb. A wording that opens with
# one of these words is a fragment ("Brightness to 60%", "Cart Milk") or already framed ("Could
# you flip Wi-Fi off", "I want ..."), and gets only the other styles of its pool.
NOT_IMPERATIVE = frozenset({
    "Alarm", "Bluetooth", "Both", "Brightness", "Calculator:", "Can", "Cart", "Could", "Dark", "I",
    "I'd", "In", "New", "Night", "Screen", "The", "Wi-Fi", "{a}", "{setting}", "{time}",
    # BROAD's
    "A", "Alarm:", "An", "App:", "At", "Calculator,", "Contact", "Contacts:", "I'll", "My", "Results",
    "Settings:", "Wake-up", "Website:", "There"})
_VERB_FRAMES: set[Style] = set()


def _framed(before: str, after: str | None = None) -> Style:
    """A verb-frame style: ``before`` + the request with its first letter lowered, then, when
    ``after`` is given, its end mark replaced by ``after``."""
    def style(s: str) -> str:
        return before + (_lower_first(s) if after is None else _lower_first(_strip_end(s)) + after)
    _VERB_FRAMES.add(style)
    return style


def takes_verb_frame(wording: str) -> bool:
    """Whether a command wording opens with an imperative verb (see ``NOT_IMPERATIVE``)."""
    return wording.split(maxsplit=1)[0] not in NOT_IMPERATIVE

# (command style, question style): a question gets no "please ... " wrapper that breaks it.
TRAIN_STYLES: tuple[tuple[Style, Style], ...] = (
    (lambda s: s, lambda s: s),
    (_framed("Please "), lambda s: s),
    (lambda s: _strip_end(s) + ", please", lambda s: s),
    (lambda s: _lower_first(s), lambda s: _lower_first(s)),
    (_framed("Can you ", "?"), lambda s: "Hey, " + _lower_first(s)),
    # What else people put around a request: fillers before and after the words to act on,
    # which a model must learn to leave out of what it types (none of them a validation or
    # held-out style; tests/bridge/test_tasks.py checks the pools stay apart).
    (lambda s: "Hey, " + _lower_first(s), lambda s: "Quick question: " + _lower_first(s)),
    (_framed("I need you to ", ""), lambda s: "OK, " + _lower_first(s)),
    (_framed("Go ahead and ", ""), lambda s: _lower_first(_strip_end(s)) + "??"),
    (lambda s: _strip_end(s) + " now", lambda s: "Hello. " + s),
    (_framed("Will you ", "?"), lambda s: "Tell me this: " + _lower_first(s)),
    (_framed("Help me ", ""), lambda s: "Hmm, " + _lower_first(s)),
    (lambda s: _lower_first(_strip_end(s)) + " asap", lambda s: "So " + _lower_first(s)),
    (_framed("Kindly "), lambda s: "Hey there, " + _lower_first(s)),
    (lambda s: _strip_end(s) + " when you get a chance", lambda s: "Just curious: " + _lower_first(s)),
    (_framed("Can you please ", "?"), lambda s: "Wondering: " + _lower_first(s)),
    (lambda s: "OK, " + _lower_first(s), lambda s: "Question: " + _lower_first(s)),
    (lambda s: _strip_end(s) + ". Thank you!", lambda s: s + " Thank you!"),
)
# More of the same for the ``broad`` mode (none a validation or held-out style).
BROAD_STYLES: tuple[tuple[Style, Style], ...] = (
    (_framed("Do me a favour and ", ""), lambda s: "Real quick: " + _lower_first(s)),
    (_framed("Time to ", ""), lambda s: "One thing: " + _lower_first(s)),
    (lambda s: _strip_end(s) + ", if you can", lambda s: "Any idea? " + s),
    (lambda s: "Right, " + _lower_first(s), lambda s: "Curious, " + _lower_first(s)),
)
VAL_STYLES: tuple[tuple[Style, Style], ...] = (
    (_framed("Would you ", "?"), lambda s: "Quick one: " + _lower_first(s)),
    (lambda s: _lower_first(_strip_end(s)) + " pls", lambda s: _lower_first(s)),
)
HELDOUT_STYLES: tuple[tuple[Style, Style], ...] = (
    (lambda s: s, lambda s: s),
    (_framed("Could you ", " for me?"), lambda s: "Hi! " + s),
    (_framed("I'd like you to ", ""), lambda s: _lower_first(s)),
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
    elif mode == "paraphrase":
        wordings, styles = PARAPHRASE.get(template_name, ()), VAL_STYLES
    elif mode == "broad":
        wordings, styles = (own, *TRAIN.get(template_name, ()), *BROAD.get(template_name, ())), TRAIN_STYLES + BROAD_STYLES
    elif mode == "val":
        wordings, styles = TRAIN.get(template_name, ()), VAL_STYLES
    else:
        wordings, styles = (own, *TRAIN.get(template_name, ())), TRAIN_STYLES
    wording = rng.choice(wordings or (own,))
    text = wording.format(**params)
    if "?" not in text and not takes_verb_frame(wording):
        styles = tuple(pair for pair in styles if pair[0] not in _VERB_FRAMES)
    command, question = rng.choice(styles)
    return (question if "?" in text else command)(text)
