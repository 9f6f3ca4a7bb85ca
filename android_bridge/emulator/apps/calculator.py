"""Calculator: a keypad and an editable display, with the usual precedence (× and ÷ before
+ and −) and a postfix percent (``40%`` is 0.4).

The display is a text field, as in AOSP's Calculator (``CalculatorEditText``): a keyboard can
type an expression into it (``input text "12 × 3"``). Typed characters go through the same
keys as taps, spaces are dropped and ``* / - x`` are read as × ÷ − ×.
"""

from __future__ import annotations

from fractions import Fraction

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.widgets import Button, Field, IconButton, Page, Row, View

OPERATORS = ("+", "−", "×", "÷")
KEYPAD = (
    ("C", "Backspace", "%", "÷"),
    ("7", "8", "9", "×"),
    ("4", "5", "6", "−"),
    ("1", "2", "3", "+"),
    ("0", ".", "="),
)
KEYS = frozenset("0123456789.%") | frozenset(OPERATORS)
TYPED_ALIASES = {"*": "×", "x": "×", "X": "×", "/": "÷", "-": "−", ":": "÷"}
ERROR = "Error"
MAX_CHARS = 24


def evaluate(expression: str) -> str:
    """The value of a display expression such as ``12+3×4``, exactly (Fraction), as the
    display writes it; "Error" for division by zero or a malformed expression."""
    tokens: list[str] = []
    number = ""
    for ch in expression:
        if ch.isdigit() or ch == ".":
            if number.endswith("%"):
                return ERROR  # "5%3"
            number += ch
        elif ch == "%":
            if not number or number.endswith("%") or number in ("-", "."):
                return ERROR
            number += ch
        elif ch in OPERATORS:
            if not number:
                if ch == "−" and not tokens:  # a leading minus (e.g. a negative previous result)
                    number = "-"
                    continue
                return ERROR
            tokens += [number, ch]
            number = ""
        else:
            return ERROR
    if not number or number in ("-", ".") or any(t.count(".") > 1 for t in tokens + [number]):
        return ERROR
    tokens.append(number)
    try:
        values = [_operand(tokens[0])]
        for op, operand in zip(tokens[1::2], tokens[2::2]):
            value = _operand(operand)
            if op in ("×", "÷"):
                if op == "÷" and value == 0:
                    return ERROR
                values[-1] = values[-1] * value if op == "×" else values[-1] / value
            else:
                values.append(value if op == "+" else -value)
    except (ValueError, ZeroDivisionError):
        return ERROR
    return format_number(sum(values, Fraction(0)))


def _operand(text: str) -> Fraction:
    return Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)


def format_number(value: Fraction) -> str:
    text = str(value.numerator) if value.denominator == 1 else f"{float(value):.10g}"
    return text.replace("-", "−")  # the display's minus sign, so a result can be computed on


class CalculatorApp(App):
    name = "Calculator"
    package = "com.edgeagent.calculator"
    color = "#d93025"

    def page_main(self) -> Page:
        calc = self.world.calculator
        display = Field(text=calc.expression, hint="Expression", rid="display", style="display",
                        has_focus=self.top.focus == "display", on_tap=self._focus, on_change=self._typed,
                        on_submit=lambda: self._press("="), height=0, margin=24)
        rows: list[View] = [display]
        for keys in KEYPAD:
            items: list[View] = []
            for key in keys:
                if key == "Backspace":
                    items.append(IconButton(desc="Backspace", icon="backspace", width=0, height=72,
                                            on_tap=self._backspace, rid="del", style="key"))
                else:
                    items.append(Button(text=key, style="key_op" if key in OPERATORS + ("=", "C") else "key",
                                        on_tap=lambda k=key: self._press(k), height=72, rid=_key_id(key)))
            rows.append(Row(items=items, height=80, margin=12))
        return Page(title="Calculator", body=rows)

    # --- behaviour --------------------------------------------------------------------
    def _press(self, key: str) -> None:
        calc = self.world.calculator
        if key == "C":
            calc.expression, calc.just_evaluated = "", False
            return
        if key == "=":
            if calc.expression:
                calc.expression = evaluate(calc.expression)
                calc.just_evaluated = True
            return
        if calc.just_evaluated:
            # After a result, a digit starts a new calculation and an operator continues it.
            if key not in OPERATORS + ("%",) or calc.expression == ERROR:
                calc.expression = ""
            calc.just_evaluated = False
        if key in OPERATORS and calc.expression and calc.expression[-1] in OPERATORS:
            calc.expression = calc.expression[:-1]  # a second operator replaces the first
        if len(calc.expression) < MAX_CHARS:
            calc.expression += key

    def _focus(self) -> None:
        self.top.focus = "display"

    def _typed(self, value: str) -> None:
        """The field's new text after a keyboard event: keys for what was added, a
        backspace for a deleted character."""
        current = self.world.calculator.expression
        if not value.startswith(current):
            self._backspace()
            return
        for ch in value[len(current):]:
            ch = TYPED_ALIASES.get(ch, ch)
            if ch in KEYS:
                self._press(ch)

    def _backspace(self) -> None:
        calc = self.world.calculator
        calc.expression = "" if calc.just_evaluated else calc.expression[:-1]
        calc.just_evaluated = False


def _key_id(key: str) -> str:
    names = {"+": "op_add", "−": "op_sub", "×": "op_mul", "÷": "op_div", "=": "eq", ".": "dec_point", "C": "clr"}
    return names.get(key, f"digit_{key}")
