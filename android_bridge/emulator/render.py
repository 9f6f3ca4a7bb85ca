"""Screenshots of the emulated phone, drawn with pillow from the same laid-out view tree the
uiautomator dump is written from; and ``draw_action``, the action about to be taken drawn
over a screenshot (for people reading traces).

Fonts: DejaVu Sans when the system has it (wide glyph coverage: × ÷ − ✈), else Pillow's own
scalable default font (Pillow >= 10.1), else its bitmap font. Rendering never fails for want
of a font file.

Length (about 600 lines) on purpose: one ``_Painter`` with a method per view kind of
``widgets.py`` (the drawing half of that table), plus the fonts, icons and the action overlay.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from android_bridge.actions import Action
from android_bridge.device import Screen
from android_bridge.emulator.widgets import (
    STATUS_BAR_DP,
    AppIcon,
    Button,
    Field,
    Frame,
    IconButton,
    ListItem,
    ListView,
    Slider,
    Switch,
    Text,
    View,
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

LIGHT = {
    "bg": "#ffffff", "surface": "#f1f3f4", "text": "#202124", "secondary": "#5f6368",
    "primary": "#1a73e8", "on_primary": "#ffffff", "divider": "#e0e0e0", "outline": "#9aa0a6",
    "error": "#d93025", "status_bg": "#f8f9fa", "bubble_in": "#e8eaed", "track_off": "#bdc1c6",
    "primary_soft": "#d2e3fc",
}
DARK = {
    "bg": "#121212", "surface": "#2a2b2e", "text": "#e8eaed", "secondary": "#9aa0a6",
    "primary": "#8ab4f8", "on_primary": "#202124", "divider": "#3c4043", "outline": "#80868b",
    "error": "#f28b82", "status_bg": "#000000", "bubble_in": "#3c4043", "track_off": "#5f6368",
    "primary_soft": "#394457",
}

_FONT_FILES = {
    False: ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    True: ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
           "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
}


@lru_cache(maxsize=2)
def _fc_match(bold: bool) -> str | None:
    if shutil.which("fc-match") is None:
        return None
    pattern = "DejaVu Sans:bold" if bold else "DejaVu Sans"
    try:
        out = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    path = out.stdout.strip()
    return path if path and Path(path).is_file() else None


@lru_cache(maxsize=64)
def font(size_px: int, bold: bool = False) -> Font:
    size_px = max(6, int(size_px))
    for candidate in (*_FONT_FILES[bold], _fc_match(bold)):
        if not candidate:
            continue
        try:
            return ImageFont.truetype(candidate, size_px)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


# --- small drawing helpers -----------------------------------------------------------------

def _text_width(f: Font, s: str) -> float:
    return f.getlength(s) if hasattr(f, "getlength") else len(s) * 6


def _fit(f: Font, s: str, width: float) -> str:
    """``s`` cut with an ellipsis to fit ``width`` pixels."""
    if _text_width(f, s) <= width:
        return s
    while s and _text_width(f, s + "…") > width:
        s = s[:-1]
    return s + "…" if s else ""


def _wrap(f: Font, s: str, width: float) -> list[str]:
    lines: list[str] = []
    for paragraph in s.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if _text_width(f, trial) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def _draw_text(d: ImageDraw.ImageDraw, s: str, f: Font, fill: str, box: tuple[float, float, float, float],
               align: str = "left", valign: str = "middle") -> None:
    x1, y1, x2, y2 = box
    s = _fit(f, s, x2 - x1)
    if not s:
        return
    left, top, right, bottom = d.textbbox((0, 0), s, font=f)
    w, h = right - left, bottom - top
    x = {"left": x1, "center": (x1 + x2 - w) / 2, "right": x2 - w}[align] - left
    ascent = f.getmetrics()[0] if hasattr(f, "getmetrics") else h
    line_h = ascent + (f.getmetrics()[1] if hasattr(f, "getmetrics") else 0)
    y = {"top": y1, "middle": (y1 + y2 - line_h) / 2, "bottom": y2 - line_h}[valign]
    d.text((x, y), s, font=f, fill=fill)


def _line_height(f: Font) -> int:
    if hasattr(f, "getmetrics"):
        a, b = f.getmetrics()
        return int((a + b) * 1.15)
    return 12


# --- icons: drawn from lines so no icon font is needed -----------------------------------

def _icon(d: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int], color: str, dp: float) -> None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    r = min(x2 - x1, y2 - y1) * 0.28
    w = max(2, int(2.2 * dp))
    if name in ("plus", "add_cart"):
        d.line((cx - r, cy, cx + r, cy), fill=color, width=w)
        d.line((cx, cy - r, cx, cy + r), fill=color, width=w)
    elif name == "minus":
        d.line((cx - r, cy, cx + r, cy), fill=color, width=w)
    elif name == "back":
        d.line((cx - r, cy, cx + r, cy), fill=color, width=w)
        d.line((cx - r, cy, cx - r * 0.2, cy - r * 0.8), fill=color, width=w)
        d.line((cx - r, cy, cx - r * 0.2, cy + r * 0.8), fill=color, width=w)
    elif name == "delete":
        d.rectangle((cx - r * 0.7, cy - r * 0.6, cx + r * 0.7, cy + r), outline=color, width=w)
        d.line((cx - r, cy - r * 0.6, cx + r, cy - r * 0.6), fill=color, width=w)
        d.line((cx - r * 0.3, cy - r, cx + r * 0.3, cy - r), fill=color, width=w)
    elif name == "search":
        d.ellipse((cx - r, cy - r, cx + r * 0.4, cy + r * 0.4), outline=color, width=w)
        d.line((cx + r * 0.25, cy + r * 0.25, cx + r, cy + r), fill=color, width=w)
    elif name == "cart":
        d.line((cx - r, cy - r * 0.8, cx - r * 0.6, cy - r * 0.8), fill=color, width=w)
        d.polygon([(cx - r * 0.6, cy - r * 0.5), (cx + r, cy - r * 0.5), (cx + r * 0.7, cy + r * 0.4),
                   (cx - r * 0.4, cy + r * 0.4)], outline=color, width=w)
        for px in (cx - r * 0.3, cx + r * 0.5):
            d.ellipse((px - w, cy + r * 0.7 - w, px + w, cy + r * 0.7 + w), fill=color)
    elif name == "edit":  # a pencil
        d.line((cx - r * 0.55, cy + r * 0.55, cx + r * 0.8, cy - r * 0.8), fill=color, width=w * 3)
        d.polygon([(cx - r, cy + r), (cx - r * 0.8, cy + r * 0.3), (cx - r * 0.3, cy + r * 0.8)], fill=color)
    elif name == "backspace":
        d.polygon([(cx - r * 1.2, cy), (cx - r * 0.5, cy - r * 0.7), (cx + r * 1.1, cy - r * 0.7),
                   (cx + r * 1.1, cy + r * 0.7), (cx - r * 0.5, cy + r * 0.7)], outline=color, width=w)
        d.line((cx - r * 0.1, cy - r * 0.35, cx + r * 0.6, cy + r * 0.35), fill=color, width=w)
        d.line((cx - r * 0.1, cy + r * 0.35, cx + r * 0.6, cy - r * 0.35), fill=color, width=w)
    else:
        _draw_text(d, name[:1].upper(), font(int(r * 1.6), True), color, box, align="center")


# --- the views -----------------------------------------------------------------------------

_TEXT_STYLES = {  # style: (size dp, bold, colour key, align)
    "body": (16, False, "text", "left"),
    "secondary": (14, False, "secondary", "left"),
    "app_title": (22, False, "text", "left"),
    "headline": (22, True, "text", "left"),
    "display": (52, False, "text", "right"),
    "dialog_title": (20, True, "text", "left"),
    "dialog_message": (15, False, "secondary", "left"),
    "error": (14, False, "error", "left"),
    "empty": (16, False, "secondary", "center"),
    "url": (14, False, "primary", "left"),
    "paragraph": (16, False, "text", "left"),
    "clock": (72, False, "on_wallpaper", "center"),
    "date": (18, False, "on_wallpaper", "center"),
}


class _Painter:
    def __init__(self, image: Image.Image, frame: Frame) -> None:
        self.image = image
        self.d = ImageDraw.Draw(image)
        self.dp = frame.dp
        self.c = dict(DARK if frame.dark else LIGHT)
        self.c["on_wallpaper"] = "#ffffff"

    def px(self, dp: float) -> int:
        return int(round(dp * self.dp))

    def view(self, v: View) -> None:
        if isinstance(v, Text):
            self.text(v)
        elif isinstance(v, Switch):
            self.switch(v)
        elif isinstance(v, Field):
            self.field(v)
        elif isinstance(v, Slider):
            self.slider(v)
        elif isinstance(v, IconButton):
            self.icon_button(v)
        elif isinstance(v, Button):
            self.button(v)
        elif isinstance(v, AppIcon):
            self.app_icon(v)
        elif isinstance(v, ListItem):
            self.list_item(v)
        for child in v.children():
            self.view(child)
        if isinstance(v, ListView):
            self.scrollbar(v)

    def text(self, v: Text) -> None:
        x1, y1, x2, y2 = v.bounds
        if v.style in ("bubble_in", "bubble_out"):
            f = font(self.px(16))
            pad = self.px(14)
            max_w = (x2 - x1) * 0.72
            tw = min(_text_width(f, v.text), max_w - 2 * pad)
            bx1 = x1 + self.px(16) if v.style == "bubble_in" else x2 - self.px(16) - tw - 2 * pad
            box = (bx1, y1 + self.px(6), bx1 + tw + 2 * pad, y2 - self.px(6))
            fill = self.c["bubble_in"] if v.style == "bubble_in" else self.c["primary"]
            color = self.c["text"] if v.style == "bubble_in" else self.c["on_primary"]
            self.d.rounded_rectangle(box, radius=self.px(18), fill=fill)
            _draw_text(self.d, v.text, f, color, (box[0] + pad, box[1], box[2] - pad, box[3]))
            return
        if v.style == "snackbar":
            self.d.rounded_rectangle(v.bounds, radius=self.px(6), fill="#323232")
            _draw_text(self.d, v.text, font(self.px(15)), "#ffffff", (x1 + self.px(16), y1, x2 - self.px(16), y2))
            return
        size, bold, color_key, align = _TEXT_STYLES.get(v.style, _TEXT_STYLES["body"])
        f = font(self.px(size), bold)
        color = self.c[color_key]
        if v.style in ("paragraph", "dialog_message"):
            y = y1
            for line in _wrap(f, v.text, x2 - x1):
                if y + _line_height(f) > y2 + 4:
                    break
                _draw_text(self.d, line, f, color, (x1, y, x2, y + _line_height(f)), valign="top")
                y += _line_height(f)
            return
        valign = "bottom" if v.style == "display" else "middle"
        _draw_text(self.d, v.text, f, color, (x1, y1, x2, y2), align=align, valign=valign)

    def button(self, v: Button) -> None:
        x1, y1, x2, y2 = v.bounds
        c = self.c
        style = v.style
        f = font(self.px(28 if style.startswith("key") else 15), bold=not style.startswith("key"))
        if style in ("key", "key_op"):
            inset = self.px(4)
            fill = c["primary_soft"] if style == "key_op" else c["surface"]
            self.d.rounded_rectangle((x1 + inset, y1 + inset, x2 - inset, y2 - inset), radius=self.px(28), fill=fill)
            _draw_text(self.d, v.text, f, c["text"], v.bounds, align="center")
            return
        if style in ("text", "dialog"):
            color = c["primary"] if v.enabled else c["outline"]
            _draw_text(self.d, v.text, f, color, v.bounds, align="center")
            return
        radius = (y2 - y1) // 2
        if style == "outlined":
            self.d.rounded_rectangle(v.bounds, radius=radius, outline=c["outline"], width=max(1, self.px(1)))
            _draw_text(self.d, v.text, f, c["primary"], v.bounds, align="center")
            return
        fill = c["error"] if style == "danger" else c["primary"]
        if not v.enabled:
            fill = c["track_off"]
        self.d.rounded_rectangle(v.bounds, radius=radius, fill=fill)
        _draw_text(self.d, v.text, f, c["on_primary"], v.bounds, align="center")

    def icon_button(self, v: IconButton) -> None:
        x1, y1, x2, y2 = v.bounds
        color = self.c["text"]
        if v.style == "fab":
            self.d.rounded_rectangle(v.bounds, radius=self.px(16), fill=self.c["primary_soft"])
            color = self.c["text"]
        elif v.style == "key":
            inset = self.px(4)
            self.d.rounded_rectangle((x1 + inset, y1 + inset, x2 - inset, y2 - inset), radius=self.px(28),
                                     fill=self.c["primary_soft"])
        side = min(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
        if v.icon == "delete" and v.style != "fab":
            color = self.c["secondary"]
        _icon(self.d, v.icon, box, color if v.enabled else self.c["outline"], self.dp)

    def switch(self, v: Switch) -> None:
        x1, y1, x2, y2 = v.bounds
        c = self.c
        tw, th = self.px(40), self.px(22)
        tx2 = x2 - self.px(4)
        cy = (y1 + y2) // 2
        track = (tx2 - tw, cy - th // 2, tx2, cy + th // 2)
        self.d.rounded_rectangle(track, radius=th // 2, fill=c["primary"] if v.is_on else c["track_off"])
        knob = th // 2 - self.px(3)
        kx = tx2 - th // 2 if v.is_on else tx2 - tw + th // 2
        self.d.ellipse((kx - knob, cy - knob, kx + knob, cy + knob), fill=c["on_primary"] if v.is_on else "#ffffff")
        if v.text:
            _draw_text(self.d, v.text, font(self.px(17)), c["text"], (x1, y1, track[0] - self.px(8), y2))
            self.d.line((x1, y2, x2, y2), fill=c["divider"], width=1)

    def field(self, v: Field) -> None:
        if v.style == "display":
            self.display_field(v)
            return
        x1, y1, x2, y2 = v.bounds
        c = self.c
        pad = self.px(16)
        f = font(self.px(16))
        if v.style == "search":
            self.d.rounded_rectangle(v.bounds, radius=(y2 - y1) // 2, fill=c["surface"],
                                     outline=c["primary"] if v.has_focus else None, width=self.px(2))
            _icon(self.d, "search", (x1 + self.px(4), y1, x1 + self.px(4) + (y2 - y1), y2), c["secondary"], self.dp)
            left = x1 + (y2 - y1)
        else:
            outline = c["primary"] if v.has_focus else c["outline"]
            self.d.rounded_rectangle(v.bounds, radius=self.px(6), outline=outline,
                                     width=self.px(2) if v.has_focus else max(1, self.px(1)))
            left = x1 + pad
        shown, color = (v.text, c["text"]) if v.text else (v.hint, c["secondary"])
        if v.multiline:
            y = y1 + pad
            lh = _line_height(f)
            lines = _wrap(f, shown, x2 - left - pad)
            for line in lines:
                if y + lh > y2 - pad // 2:
                    break
                _draw_text(self.d, line, f, color, (left, y, x2 - pad, y + lh), valign="top")
                y += lh
            caret_x = left + (_text_width(f, lines[-1]) if v.text else 0)
            caret_y = (y - lh, y)
        else:
            width = x2 - pad - left
            if v.has_focus and v.text and _text_width(f, shown) > width:
                # A focused field scrolls sideways to keep the caret (the end) in view.
                while len(shown) > 1 and _text_width(f, "…" + shown) > width:
                    shown = shown[1:]
                shown = "…" + shown
            _draw_text(self.d, shown, f, color, (left, y1, x2 - pad, y2))
            caret_x = left + min(_text_width(f, shown), width) if v.text else left
            caret_y = ((y1 + y2) / 2 - self.px(11), (y1 + y2) / 2 + self.px(11))
        if v.has_focus:
            self.d.line((caret_x + 2, caret_y[0], caret_x + 2, caret_y[1]), fill=c["primary"], width=max(2, self.px(1)))
        if v.hint and v.text and v.style != "search" and not v.multiline:
            # A filled outlined field keeps its hint as a small label on the border.
            lf = font(self.px(11))
            lw = _text_width(lf, v.hint)
            self.d.rectangle((left - self.px(4), y1 - self.px(7), left + lw + self.px(4), y1 + self.px(7)), fill=c["bg"])
            _draw_text(self.d, v.hint, lf, c["primary"] if v.has_focus else c["secondary"],
                       (left, y1 - self.px(8), left + lw + 2, y1 + self.px(8)))

    def display_field(self, v: Field) -> None:
        """A calculator's editable display: large right-aligned text at the bottom, no outline;
        "0" while empty, as calculators show it."""
        x1, y1, x2, y2 = v.bounds
        size, _, colour, _ = _TEXT_STYLES["display"]
        pad = self.px(16)
        f = font(self.px(size))
        while size > 20 and _text_width(f, v.text) > x2 - x1 - 2 * pad:  # shrink a long expression
            size -= 4
            f = font(self.px(size))
        _draw_text(self.d, v.text or "0", f, self.c[colour] if v.text else self.c["secondary"],
                   (x1 + pad, y1, x2 - pad, y2 - pad), align="right", valign="bottom")
        if v.has_focus:
            self.d.line((x2 - pad + 3, y2 - pad - self.px(size), x2 - pad + 3, y2 - pad),
                        fill=self.c["primary"], width=max(2, self.px(1)))

    def slider(self, v: Slider) -> None:
        x1, y1, x2, y2 = v.bounds
        cy = (y1 + y2) // 2
        frac = (v.value - v.minimum) / max(1, v.maximum - v.minimum)
        pad = self.px(10)
        xv = x1 + pad + frac * (x2 - x1 - 2 * pad)
        self.d.rounded_rectangle((x1 + pad, cy - self.px(2), x2 - pad, cy + self.px(2)), radius=self.px(2),
                                 fill=self.c["track_off"])
        self.d.rounded_rectangle((x1 + pad, cy - self.px(2), xv, cy + self.px(2)), radius=self.px(2),
                                 fill=self.c["primary"])
        k = self.px(10)
        self.d.ellipse((xv - k, cy - k, xv + k, cy + k), fill=self.c["primary"])

    def app_icon(self, v: AppIcon) -> None:
        x1, y1, x2, y2 = v.bounds
        side = self.px(60)
        cx = (x1 + x2) // 2
        top = y1 + self.px(8)
        box = (cx - side // 2, top, cx + side // 2, top + side)
        self.d.rounded_rectangle(box, radius=self.px(18), fill=v.color)
        _draw_text(self.d, v.text[:1], font(self.px(30), True), "#ffffff", box, align="center")
        _draw_text(self.d, v.text, font(self.px(13)), "#ffffff", (x1, top + side + self.px(4), x2, y2), align="center",
                   valign="top")

    def list_item(self, v: ListItem) -> None:
        x1, y1, x2, y2 = v.bounds
        c = self.c
        left = x1 + self.px(16)
        right = min((t.bounds[0] for t in v.trailing), default=x2 - self.px(16)) - self.px(8)
        if v.style == "avatar" and v.desc:
            r = self.px(20)
            cy = (y1 + y2) // 2
            hue = sum(map(ord, v.desc)) % 6
            palette = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb")
            self.d.ellipse((left, cy - r, left + 2 * r, cy + r), fill=palette[hue])
            _draw_text(self.d, v.desc[:1], font(self.px(18), True), "#ffffff", (left, cy - r, left + 2 * r, cy + r),
                       align="center")
            left += 2 * r + self.px(16)
        size, bold = (30, False) if v.style == "alarm" else (17, False)
        title_box = (left, y1, right, (y1 + y2) // 2 + self.px(4)) if v.subtitle else (left, y1, right, y2)
        _draw_text(self.d, v.desc, font(self.px(size), bold), c["text"], title_box,
                   valign="bottom" if v.subtitle else "middle")
        self.d.line((x1 + self.px(16), y2 - 1, x2, y2 - 1), fill=c["divider"], width=1)

    def scrollbar(self, v: ListView) -> None:
        if not v.scrollable:
            return
        x1, y1, x2, y2 = v.bounds
        n, fit = len(v.rows), max(1, len(v.children()))
        h = (y2 - y1) * fit / n
        top = y1 + (y2 - y1 - h) * (v.offset / max(1, n - fit))
        self.d.rounded_rectangle((x2 - self.px(4), top, x2 - self.px(1), top + h), radius=self.px(2),
                                 fill=self.c["outline"])


def _wallpaper(size: tuple[int, int]) -> Image.Image:
    w, h = size
    top, bottom = (25, 55, 109), (122, 76, 142)
    strip = Image.new("RGB", (1, 256))
    for i in range(256):
        t = i / 255
        strip.putpixel((0, i), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return strip.resize((w, h), Image.BILINEAR)


def _status_bar(p: _Painter, frame: Frame, on_wallpaper: bool) -> None:
    w = frame.size[0]
    h = p.px(STATUS_BAR_DP)
    color = "#ffffff" if on_wallpaper or frame.dark else p.c["text"]
    if not on_wallpaper:
        p.d.rectangle((0, 0, w, h), fill=p.c["status_bg"])
    f = font(p.px(14), True)
    s = frame.status
    _draw_text(p.d, s.time, f, color, (p.px(16), 0, w / 2, h))
    # Battery: an outline filled to the level, then the percentage to its left.
    bw, bh = p.px(22), p.px(11)
    bx2 = w - p.px(16)
    by1 = (h - bh) // 2
    p.d.rounded_rectangle((bx2 - bw, by1, bx2, by1 + bh), radius=p.px(2), outline=color, width=max(1, p.px(1)))
    fill_w = (bw - p.px(4)) * max(0, min(100, s.battery_pct)) / 100
    p.d.rectangle((bx2 - bw + p.px(2), by1 + p.px(2), bx2 - bw + p.px(2) + fill_w, by1 + bh - p.px(2)), fill=color)
    pct = f"{s.battery_pct}%"
    pw = _text_width(f, pct)
    x = bx2 - bw - p.px(6) - pw
    _draw_text(p.d, pct, f, color, (x, 0, x + pw + 2, h))
    x -= p.px(8)
    if s.airplane:
        x -= p.px(16)
        _draw_text(p.d, "✈", font(p.px(15)), color, (x, 0, x + p.px(16), h), align="center")
    if s.wifi:
        x -= p.px(18)
        cx, cy = x + p.px(9), h - p.px(6)
        for k, r in enumerate((p.px(9), p.px(6), p.px(3))):
            if k < 2:
                p.d.arc((cx - r, cy - r, cx + r, cy + r), 225, 315, fill=color, width=max(2, p.px(1.6)))
            else:
                p.d.ellipse((cx - r / 2, cy - r, cx + r / 2, cy), fill=color)
    if s.bluetooth:  # the Bluetooth rune, from lines
        x -= p.px(14)
        cx, top, bot, arm = x + p.px(6), p.px(6), h - p.px(6), p.px(4)
        q = (bot - top) / 4
        lw = max(2, p.px(1.4))
        p.d.line((cx, top, cx, bot), fill=color, width=lw)
        p.d.line([(cx - arm, top + q), (cx + arm, bot - q), (cx, bot)], fill=color, width=lw)
        p.d.line([(cx - arm, bot - q), (cx + arm, top + q), (cx, top)], fill=color, width=lw)


def render_frame(frame: Frame) -> Image.Image:
    """An RGB screenshot of ``frame`` at the phone's pixel size."""
    on_wallpaper = frame.background == "wallpaper"
    theme = DARK if frame.dark else LIGHT
    image = _wallpaper(frame.size) if on_wallpaper else Image.new("RGB", frame.size, theme["bg"])
    painter = _Painter(image, frame)
    painter.view(frame.window)
    _status_bar(painter, frame, on_wallpaper)
    if frame.dialog is not None:
        # A dialog dims what is behind it, as Android's window dim does.
        shade = Image.new("RGB", frame.size, "#000000")
        image = Image.blend(image, shade, 0.45)
        painter = _Painter(image, frame)
        card = theme["surface"] if frame.dark else theme["bg"]  # dark dialogs are lifted, not black
        painter.d.rounded_rectangle(frame.dialog.bounds, radius=painter.px(24), fill=card)
        painter.view(frame.dialog)
    return image


# --- the action about to be taken ------------------------------------------------------------

ACTION_COLOR = (234, 67, 53)


def _finger_path(action: Action, screen: Screen) -> tuple[int, int, int, int]:
    """Where a swipe/scroll moves the finger; the same geometry as ``Device.act``."""
    w, h = screen.size
    x1, y1, x2, y2 = 0, 0, w, h
    if action.index is not None:
        try:
            x1, y1, x2, y2 = screen.element(action.index).bounds
        except Exception:
            pass
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    dx, dy = (x2 - x1) // 3, (y2 - y1) // 3
    finger = action.direction or "up"
    if action.action == "scroll":
        finger = {"up": "down", "down": "up", "left": "right", "right": "left"}[finger]
    vx, vy = {"up": (0, -dy), "down": (0, dy), "left": (-dx, 0), "right": (dx, 0)}[finger]
    return cx - vx, cy - vy, cx + vx, cy + vy


def _describe(action: Action) -> str:
    if action.action == "type":
        return f"type {action.text!r}"
    if action.action == "open_app":
        return f"open_app {action.app}"
    if action.action in ("swipe", "scroll"):
        return f"{action.action} {action.direction}"
    if action.action == "done":
        text = f"done ({action.status})"
        return text + (f": {action.answer}" if action.answer else "")
    if action.action in ("tap", "long_press"):
        target = action.element or (f"#{action.index}" if action.index is not None else f"({action.x}, {action.y})")
        return f"{action.action} {target}"
    return action.action


def draw_action(image: Image.Image, action: Action, screen: Screen) -> Image.Image:
    """A copy of ``image`` (a screenshot of ``screen``, possibly downscaled) with ``action``
    drawn on it: a ring at a tap, an arrow for a swipe or scroll, a label box for the rest."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    sx, sy = base.width / screen.size[0], base.height / screen.size[1]
    unit = max(1.0, base.width / 360)  # one dp of the drawing
    color = ACTION_COLOR + (255,)
    soft = ACTION_COLOR + (90,)
    label_at: tuple[float, float] | None = None

    element = None
    if action.index is not None:
        try:
            element = screen.element(action.index)
        except Exception:
            element = None
    if element is not None:
        ex1, ey1, ex2, ey2 = element.bounds
        d.rectangle((ex1 * sx, ey1 * sy, ex2 * sx, ey2 * sy), outline=color, width=max(2, int(unit)))

    if action.action in ("tap", "long_press"):
        if element is not None:
            x, y = element.center
        else:
            x, y = action.x or 0, action.y or 0
        px, py = x * sx, y * sy
        r = 18 * unit
        d.ellipse((px - r, py - r, px + r, py + r), fill=soft, outline=color, width=max(3, int(1.5 * unit)))
        if action.action == "long_press":
            r2 = r * 1.5
            d.ellipse((px - r2, py - r2, px + r2, py + r2), outline=color, width=max(2, int(unit)))
        d.ellipse((px - 3 * unit, py - 3 * unit, px + 3 * unit, py + 3 * unit), fill=color)
        label_at = (px, py + r * 1.8)
    elif action.action in ("swipe", "scroll"):
        x1, y1, x2, y2 = (v * s for v, s in zip(_finger_path(action, screen), (sx, sy, sx, sy)))
        width = max(4, int(3 * unit))
        d.line((x1, y1, x2, y2), fill=color, width=width)
        angle = math.atan2(y2 - y1, x2 - x1)
        head = 16 * unit
        d.polygon([(x2, y2),
                   (x2 - head * math.cos(angle - 0.45), y2 - head * math.sin(angle - 0.45)),
                   (x2 - head * math.cos(angle + 0.45), y2 - head * math.sin(angle + 0.45))], fill=color)
        d.ellipse((x1 - 8 * unit, y1 - 8 * unit, x1 + 8 * unit, y1 + 8 * unit), fill=soft, outline=color)
        label_at = ((x1 + x2) / 2 + 12 * unit, (y1 + y2) / 2)
    elif action.action == "type" and element is not None:
        label_at = (element.center[0] * sx, element.bounds[3] * sy + 14 * unit)

    # The label box says what happens, for every kind of action.
    f = font(int(14 * unit), True)
    text = _fit(f, _describe(action), base.width - 24 * unit)
    tw = _text_width(f, text)
    pad = 8 * unit
    if label_at is None:
        label_at = (base.width / 2, base.height - 72 * unit)
    lx = min(max(label_at[0] - tw / 2 - pad, 4), base.width - tw - 2 * pad - 4)
    ly = min(max(label_at[1], 4), base.height - 36 * unit)
    box = (lx, ly, lx + tw + 2 * pad, ly + 28 * unit)
    d.rounded_rectangle(box, radius=int(8 * unit), fill=(32, 33, 36, 230), outline=color, width=max(1, int(unit)))
    _draw_text(d, text, f, "#ffffff", (box[0] + pad, box[1], box[2] - pad + 2, box[3]))
    return Image.alpha_composite(base, overlay).convert("RGB")

