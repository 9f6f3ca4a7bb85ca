"""A tiny view tree shared by every emulated app.

Each app builds a fresh tree of these views from its state on every frame (a declarative UI),
``layout_page`` gives every view its pixel bounds, and that one laid-out tree is then written
as uiautomator XML (dump.py), drawn with pillow (render.py) and hit-tested for touches
(phone.py). One tree for all three keeps what the agent reads, what a person sees and what a
tap does in agreement.

Sizes are in dp (density-independent pixels) and scaled by ``dp`` px per dp at layout time,
as Android does, so the apps lay out on any screen size (1080 px wide = 360 dp at 3 px/dp).

Length (about 500 lines): the view kinds and the one layout pass over them; the dump, the
renderer and the touch handling all read this one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in screen pixels
Callback = Callable[[], None]

SCREEN_WIDTH_DP = 360
STATUS_BAR_DP = 24
APP_BAR_DP = 56
FAB_DP = 56
DIALOG_WIDTH_DP = 312


@dataclass(eq=False)
class View:
    """A leaf or a container. ``on_tap`` makes it clickable; ``sensitive`` marks a tap that
    means paying, sending, deleting or calling (or starts it: "Checkout", "Delete note" open
    the confirming dialog), which a person should approve."""

    CLASS: ClassVar[str] = "android.view.View"

    text: str = ""
    desc: str = ""  # content-desc: the accessible name of a view without text
    rid: str = ""  # resource-id without the "package:id/" prefix
    on_tap: Callback | None = None
    enabled: bool = True
    sensitive: bool = False
    height: float = 48.0  # dp; 0 = share the height left over in a Column
    width: float = 0.0  # dp; 0 = share the width left over in a Row, by weight
    weight: float = 1.0
    margin: float = 16.0  # dp of horizontal margin inside a Column
    style: str = ""  # a rendering hint (see render.py)
    bounds: Box = (0, 0, 0, 0)

    def children(self) -> list[View]:
        return []

    @property
    def clickable(self) -> bool:
        return self.on_tap is not None and self.enabled

    # What uiautomator reports beyond text/desc/clickable; subclasses override.
    checkable: ClassVar[bool] = False
    scrollable: ClassVar[bool] = False

    @property
    def checked(self) -> bool:
        return False

    @property
    def focusable(self) -> bool:
        return self.clickable

    @property
    def focused(self) -> bool:
        return False

    def layout(self, box: Box, dp: float) -> None:
        self.bounds = box

    def tap_at(self, x: int, y: int) -> None:
        """A finger lifted at (x, y) on this view."""
        if self.clickable:
            assert self.on_tap is not None
            self.on_tap()

    def contains(self, x: int, y: int) -> bool:
        x1, y1, x2, y2 = self.bounds
        return x1 <= x < x2 and y1 <= y < y2

    def walk(self) -> Iterator[View]:
        yield self
        for child in self.children():
            yield from child.walk()


# --- leaves ------------------------------------------------------------------------------

@dataclass(eq=False)
class Text(View):
    CLASS: ClassVar[str] = "android.widget.TextView"
    height: float = 32.0
    style: str = "body"


@dataclass(eq=False)
class Button(View):
    CLASS: ClassVar[str] = "android.widget.Button"
    style: str = "filled"  # filled | outlined | text | key


@dataclass(eq=False)
class IconButton(View):
    """An icon with no text; its ``desc`` is the name a person (and the agent) uses for it."""

    CLASS: ClassVar[str] = "android.widget.ImageButton"
    icon: str = ""  # a name render.py knows how to draw: plus, minus, back, delete, search, ...
    width: float = 48.0


@dataclass(eq=False)
class Switch(View):
    CLASS: ClassVar[str] = "android.widget.Switch"
    is_on: bool = False
    height: float = 56.0
    checkable: ClassVar[bool] = True

    @property
    def checked(self) -> bool:
        return self.is_on


@dataclass(eq=False)
class Field(View):
    """A text field. ``text`` is its value; it takes typed text only while it has focus."""

    CLASS: ClassVar[str] = "android.widget.EditText"
    hint: str = ""
    has_focus: bool = False
    on_change: Callable[[str], None] | None = None
    on_submit: Callback | None = None  # what the keyboard's Enter key does
    allowed: str | None = None  # characters the field accepts (None: any printable)
    max_len: int = 60
    multiline: bool = False
    height: float = 56.0

    @property
    def focusable(self) -> bool:
        return True

    @property
    def focused(self) -> bool:
        return self.has_focus

    def type_text(self, text: str) -> None:
        """Append what the keyboard sends, filtered the way the field's input type would."""
        keep = []
        for ch in text:
            if ch == "\n" and not self.multiline:
                continue
            if not ch.isprintable() and ch != "\n":
                continue
            if self.allowed is not None and ch not in self.allowed:
                continue
            keep.append(ch)
        if self.on_change is not None:
            self.on_change((self.text + "".join(keep))[: self.max_len])

    def delete_char(self) -> None:
        if self.on_change is not None and self.text:
            self.on_change(self.text[:-1])


@dataclass(eq=False)
class Slider(View):
    """A seek bar; a tap sets the value under the finger, snapped to ``step``."""

    CLASS: ClassVar[str] = "android.widget.SeekBar"
    value: int = 0
    minimum: int = 0
    maximum: int = 100
    step: int = 10
    on_set: Callable[[int], None] | None = None

    @property
    def clickable(self) -> bool:
        return self.on_set is not None and self.enabled

    def tap_at(self, x: int, y: int) -> None:
        if not self.clickable or self.on_set is None:
            return
        x1, _, x2, _ = self.bounds
        frac = min(max((x - x1) / max(1, x2 - x1), 0.0), 1.0)
        raw = self.minimum + frac * (self.maximum - self.minimum)
        self.on_set(int(round(raw / self.step) * self.step))


@dataclass(eq=False)
class AppIcon(View):
    """A launcher icon. Launcher3 exposes these as TextViews carrying the app name."""

    CLASS: ClassVar[str] = "android.widget.TextView"
    color: str = "#1a73e8"
    height: float = 104.0
    margin: float = 8.0


# --- containers --------------------------------------------------------------------------

@dataclass(eq=False)
class Column(View):
    """Children stacked top to bottom; children with height 0 share what is left."""

    CLASS: ClassVar[str] = "android.widget.LinearLayout"
    items: list[View] = field(default_factory=list)
    gap: float = 8.0
    pad_top: float = 8.0
    margin: float = 0.0
    height: float = 0.0

    def children(self) -> list[View]:
        return self.items

    def layout(self, box: Box, dp: float) -> None:
        self.bounds = box
        x1, y1, x2, y2 = box
        fixed = sum(c.height for c in self.items if c.height > 0)
        gaps = self.gap * max(0, len(self.items) - 1) + self.pad_top
        flex = [c for c in self.items if c.height <= 0]
        left_dp = max(0.0, (y2 - y1) / dp - fixed - gaps)
        y = y1 + self.pad_top * dp
        for c in self.items:
            h = (c.height if c.height > 0 else left_dp / len(flex)) * dp
            m = c.margin * dp
            c.layout((int(x1 + m), int(y), int(x2 - m), int(min(y + h, y2))), dp)
            y += h + self.gap * dp


@dataclass(eq=False)
class Row(View):
    """Children side by side, vertically centred; fixed-width children keep their width."""

    CLASS: ClassVar[str] = "android.widget.LinearLayout"
    items: list[View] = field(default_factory=list)
    gap: float = 8.0
    height: float = 56.0

    def children(self) -> list[View]:
        return self.items

    def layout(self, box: Box, dp: float) -> None:
        self.bounds = box
        x1, y1, x2, y2 = box
        fixed = sum(c.width for c in self.items if c.width > 0)
        weights = sum(c.weight for c in self.items if c.width <= 0) or 1.0
        free = max(0.0, (x2 - x1) / dp - fixed - self.gap * max(0, len(self.items) - 1))
        x = float(x1)
        for c in self.items:
            w = (c.width if c.width > 0 else free * c.weight / weights) * dp
            h = min(c.height * dp, y2 - y1) if c.height > 0 else y2 - y1
            top = y1 + ((y2 - y1) - h) / 2
            c.layout((int(x), int(top), int(x + w), int(top + h)), dp)
            x += w + self.gap * dp


@dataclass(eq=False)
class ListItem(View):
    """A list row: its title is its content-desc (the row's name), an optional subtitle is a
    TextView below it, and trailing views (a switch, icon buttons) sit at its right end."""

    CLASS: ClassVar[str] = "android.widget.LinearLayout"
    subtitle: str = ""
    trailing: list[View] = field(default_factory=list)
    height: float = 64.0
    margin: float = 0.0
    _subtitle_view: Text | None = None

    @property
    def title(self) -> str:
        return self.desc

    def children(self) -> list[View]:
        kids: list[View] = []
        if self._subtitle_view is not None:
            kids.append(self._subtitle_view)
        return kids + self.trailing

    def layout(self, box: Box, dp: float) -> None:
        self.bounds = box
        x1, y1, x2, y2 = box
        right = x2 - 16 * dp
        for view in reversed(self.trailing):
            w = (view.width or 56) * dp
            h = min(view.height * dp, y2 - y1)
            top = y1 + ((y2 - y1) - h) / 2
            view.layout((int(right - w), int(top), int(right), int(top + h)), dp)
            right -= w + 8 * dp
        if self.subtitle:
            mid = (y1 + y2) // 2
            left = x1 + (72 if self.style == "avatar" else 16) * dp  # past the avatar circle
            self._subtitle_view = Text(text=self.subtitle, style="secondary", rid=self.rid + "_detail" if self.rid else "")
            self._subtitle_view.layout((int(left), mid, int(right - 8 * dp), int(y2 - 8 * dp)), dp)


@dataclass(eq=False)
class ListView(View):
    """A scrolling list of equal-height rows. Only rows that fit are laid out (and dumped),
    as a RecyclerView recycles the rest; ``offset`` is the first visible row."""

    CLASS: ClassVar[str] = "androidx.recyclerview.widget.RecyclerView"
    rows: list[View] = field(default_factory=list)
    row_height: float = 64.0
    offset: int = 0
    on_scroll: Callable[[int], None] | None = None
    empty_text: str = ""
    margin: float = 0.0
    height: float = 0.0
    _visible: list[View] = field(default_factory=list)
    _fit: int = 1

    @property
    def scrollable(self) -> bool:  # type: ignore[override]
        return len(self.rows) > self._fit

    @property
    def focusable(self) -> bool:
        return self.scrollable

    def children(self) -> list[View]:
        return self._visible

    def max_offset(self) -> int:
        return max(0, len(self.rows) - self._fit)

    def layout(self, box: Box, dp: float) -> None:
        self.bounds = box
        x1, y1, x2, y2 = box
        row_px = self.row_height * dp
        self._fit = max(1, int((y2 - y1) // row_px))
        self.offset = min(max(self.offset, 0), self.max_offset())
        if not self.rows and self.empty_text:
            empty = Text(text=self.empty_text, style="empty", rid="empty")
            empty.layout((int(x1 + 16 * dp), int(y1 + 24 * dp), int(x2 - 16 * dp), int(y1 + 72 * dp)), dp)
            self._visible = [empty]
            return
        self._visible = self.rows[self.offset : self.offset + self._fit]
        for i, row in enumerate(self._visible):
            top = y1 + i * row_px
            row.layout((x1, int(top), x2, int(top + row_px)), dp)

    def scroll_by_pixels(self, content_dy: int, dp: float) -> None:
        """Move the content ``content_dy`` px (positive: reveal rows below), whole rows at a time."""
        rows = round(content_dy / (self.row_height * dp))
        if rows == 0 and abs(content_dy) >= 8 * dp:  # a short fling still moves one row
            rows = 1 if content_dy > 0 else -1
        new = min(max(self.offset + rows, 0), self.max_offset())
        if new != self.offset and self.on_scroll is not None:
            self.on_scroll(new)


@dataclass(eq=False)
class Window(View):
    """The root FrameLayout of a window (the app, or a dialog over it)."""

    CLASS: ClassVar[str] = "android.widget.FrameLayout"
    items: list[View] = field(default_factory=list)

    def children(self) -> list[View]:
        return self.items


# --- pages and dialogs: what an app returns for its current state ------------------------

@dataclass(eq=False)
class Dialog:
    title: str
    message: str = ""
    buttons: list[Button] = field(default_factory=list)
    on_cancel: Callback | None = None  # BACK or a tap outside the dialog


@dataclass(eq=False)
class Page:
    title: str
    body: list[View] = field(default_factory=list)
    on_up: Callback | None = None  # shows the app bar's "Navigate up" arrow
    actions: list[IconButton] = field(default_factory=list)  # app bar icons at the right
    bottom: list[View] = field(default_factory=list)  # pinned above the bottom edge
    fab: IconButton | None = None  # floating action button
    dialog: Dialog | None = None
    app_bar: bool = True
    background: str = ""  # render hint: "" (theme background) or "wallpaper"


@dataclass
class StatusBar:
    time: str
    battery_pct: int
    wifi: bool
    bluetooth: bool
    airplane: bool


@dataclass(eq=False)
class Frame:
    """One laid-out moment of the screen: the app window, maybe a dialog window over it."""

    package: str
    size: tuple[int, int]
    dp: float
    window: Window
    dialog: Window | None
    status: StatusBar
    dark: bool = False
    background: str = ""
    on_dialog_cancel: Callback | None = None  # what BACK or a tap outside the dialog does

    def focus_window(self) -> Window:
        """The window that takes touches and that ``uiautomator dump`` writes out."""
        return self.dialog if self.dialog is not None else self.window

    def hit(self, x: int, y: int) -> View | None:
        """The deepest clickable view under (x, y) in the focused window; later siblings are
        drawn on top (a FAB over a list), so they are tried first."""
        return _hit(self.focus_window(), x, y)

    def scroll_target(self, x: int, y: int) -> ListView | None:
        found = None
        for view in self.focus_window().walk():
            if isinstance(view, ListView) and view.contains(x, y):
                found = view
        return found

    def focused_field(self) -> Field | None:
        for view in self.focus_window().walk():
            if isinstance(view, Field) and view.has_focus:
                return view
        return None

    def views(self) -> Iterator[View]:
        return self.focus_window().walk()


def _hit(view: View, x: int, y: int) -> View | None:
    if not view.contains(x, y):
        return None
    for child in reversed(view.children()):
        found = _hit(child, x, y)
        if found is not None:
            return found
    return view if view.clickable else None


def layout_page(page: Page, package: str, size: tuple[int, int], status: StatusBar, dark: bool) -> Frame:
    """Place a page's views on a screen of ``size`` pixels."""
    w, h = size
    dp = w / SCREEN_WIDTH_DP
    top = STATUS_BAR_DP * dp
    items: list[View] = []

    if page.app_bar:
        bar_items: list[View] = []
        if page.on_up is not None:
            bar_items.append(IconButton(desc="Navigate up", icon="back", on_tap=page.on_up, rid="up"))
        bar_items.append(Text(text=page.title, rid="title", style="app_title", height=APP_BAR_DP))
        bar_items.extend(page.actions)
        bar = Row(items=bar_items, rid="toolbar", height=APP_BAR_DP, gap=4)
        left = 4 if page.on_up is not None else 16  # the title lines up with the content below
        bar.layout((int(left * dp), int(top), int(w - 4 * dp), int(top + APP_BAR_DP * dp)), dp)
        items.append(bar)
        top += APP_BAR_DP * dp

    bottom_dp = sum(v.height for v in page.bottom) + (8 * (len(page.bottom) + 1) if page.bottom else 0)
    bottom_top = h - bottom_dp * dp
    body = Column(items=page.body, rid="content")
    body.layout((0, int(top), w, int(bottom_top)), dp)
    items.append(body)
    if page.bottom:
        bottom = Column(items=page.bottom, rid="bottom_bar")
        bottom.layout((0, int(bottom_top), w, h), dp)
        items.append(bottom)
    if page.fab is not None:
        s = FAB_DP * dp
        m = 16 * dp
        page.fab.style = "fab"
        page.fab.layout((int(w - m - s), int(bottom_top - m - s), int(w - m), int(bottom_top - m)), dp)
        items.append(page.fab)

    window = Window(items=items)
    window.layout((0, 0, w, h), dp)
    dialog = _layout_dialog(page.dialog, size, dp) if page.dialog is not None else None
    return Frame(package=package, size=size, dp=dp, window=window, dialog=dialog, status=status, dark=dark,
                 background=page.background, on_dialog_cancel=page.dialog.on_cancel if page.dialog else None)


def _layout_dialog(d: Dialog, size: tuple[int, int], dp: float) -> Window:
    w, h = size
    dw = min(DIALOG_WIDTH_DP * dp, w - 16 * dp)
    items: list[View] = [Text(text=d.title, rid="alertTitle", style="dialog_title", height=48)]
    if d.message:
        items.append(Text(text=d.message, rid="message", style="dialog_message", height=64))
    for b in d.buttons:
        b.style = b.style if b.style != "filled" else "dialog"
        b.width = max(96.0, 16 + 9 * len(b.text))
    items.append(Row(items=[Text(text="", height=0, weight=1), *d.buttons], rid="buttonPanel", height=56))
    content_dp = sum(v.height for v in items) + 8 * len(items) + 16
    dh = content_dp * dp
    x1, y1 = (w - dw) / 2, (h - dh) / 2
    column = Column(items=items, gap=8, pad_top=16)
    for v in items:
        v.margin = 24 if not isinstance(v, Row) else 16
    column.layout((int(x1), int(y1), int(x1 + dw), int(y1 + dh)), dp)
    window = Window(items=[column], style="dialog", on_tap=None)
    window.bounds = (int(x1), int(y1), int(x1 + dw), int(y1 + dh))
    return window
