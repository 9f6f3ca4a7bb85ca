"""Browser: a search box, a results list longer than the screen, and web pages.

Results are made up from the query, deterministically, so a task can name a result that is
below the fold and the agent has to scroll to it.
"""

from __future__ import annotations

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.widgets import IconButton, ListItem, Page, Row, Text, View

RESULT_TITLES = (
    "{Q} - Wikipedia", "{Q}: a complete guide", "Top 10 tips: {q}", "{Q} explained", "News about {q}",
    "{Q} on the forum", "{Q} videos", "{Q}: quick answers", "The history of {q}", "{Q} for beginners",
    "{Q} FAQ", "Compare {q} options", "{Q} near you", "{Q} in 5 minutes", "{Q}: common mistakes",
)
RESULT_SITES = (
    "wiki.example.org", "guide.example.com", "tips.example.net", "learn.example.org", "news.example.com",
    "forum.example.net", "video.example.com", "answers.example.org", "history.example.net", "start.example.com",
    "faq.example.org", "compare.example.com", "local.example.net", "fast.example.org", "help.example.com",
)
WEBSITES = {
    "news.example.com": "Today's headlines",
    "weather.example.org": "Weather forecast",
    "recipes.example.net": "Recipes of the day",
    "maps.example.com": "Maps and directions",
    "books.example.org": "New books this week",
    "sports.example.com": "Live scores",
}


def search_results(query: str) -> list[tuple[str, str]]:
    """(title, address) of every result for ``query``, in rank order."""
    q = " ".join(query.split())
    cap = q[:1].upper() + q[1:]
    slug = "-".join(q.lower().split())
    return [(pattern.format(q=q, Q=cap), f"{site}/{slug}") for pattern, site in zip(RESULT_TITLES, RESULT_SITES)]


def is_address(text: str) -> bool:
    return " " not in text.strip() and "." in text.strip()


class BrowserApp(App):
    name = "Browser"
    package = "com.edgeagent.browser"
    color = "#12b5cb"

    def _search_bar(self) -> Row:
        return Row(items=[
            self.field("query", "Search or type web address", on_submit=self._submit, style="search", margin=0),
            IconButton(desc="Search", icon="search", on_tap=self._submit, rid="go"),
        ], height=56)

    def page_main(self) -> Page:
        return Page(title="Browser", body=[self._search_bar(), Text(text="Type a search or an address", style="secondary")])

    def page_results(self, query: str) -> Page:
        rows: list[View] = [
            ListItem(desc=title, subtitle=address, height=72, rid="result",
                     on_tap=lambda t=title, a=address: self._open_page(t, a))
            for title, address in search_results(query)
        ]
        return Page(title="Results", on_up=self.up, body=[self._search_bar(), self.list_view("results", rows, 72)])

    def page_web(self, title: str, address: str) -> Page:
        return Page(
            title="Browser",
            on_up=self.up,
            body=[
                Text(text=address, rid="url", style="url", height=40),
                Text(text=title, rid="page_title", style="headline", height=56),
                Text(text=f"This page is about {title.lower()}. It was last updated this week.",
                     style="paragraph", height=120, rid="page_text"),
            ],
        )

    def _submit(self) -> None:
        text = " ".join(self.value("query").split())
        if not text:
            return
        if is_address(text):
            address = text.lower().removeprefix("https://").removeprefix("http://").rstrip("/")
            self._open_page(WEBSITES.get(address, f"Welcome to {address}"), address)
        else:
            self.world.browser.searches.append(text)
            self.go("results", fields={"query": text}, query=text)

    def _open_page(self, title: str, address: str) -> None:
        self.world.browser.visited.append(address)
        self.go("web", title=title, address=address)
