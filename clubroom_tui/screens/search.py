"""The search panel: words in, matching messages out, choose one to jump to it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from clubroom_tui.client import ClientError, ClubroomClient
from clubroom_tui.plain import plain
from protocol import SearchResult, parse_time

MORE = "more"


def result_line(result: SearchResult) -> Text:
    """One result: when, who, and the text with the searched words highlighted.

    The highlights are offsets into the text (never markup); each piece is
    made printable on its own, so the offsets stay right.
    """
    message = result.message
    moment = parse_time(message.at).astimezone().strftime("%d %b %H:%M")
    line = Text.assemble((moment, "dim"), " ", plain(message.author, "bold"), ": ")
    text, at = message.text.replace("\n", " "), 0
    for start, end in result.highlights:
        line.append_text(plain(text[at:start]))
        line.append_text(plain(text[start:end], "reverse"))
        at = end
    line.append_text(plain(text[at:]))
    return line


class SearchPanel(ModalScreen[int | None]):
    """Search the room; dismiss with the id of the chosen message (None: cancelled)."""

    AUTO_FOCUS = "#search-query"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close"),
        Binding("ctrl+o", "toggle_order", "Newest/best"),
    ]

    def __init__(self, client: ClubroomClient, room: str, query: str = "") -> None:
        super().__init__()
        self.client = client
        self.room = room
        self.query_text = query
        self.order = "newest"
        self._results: list[SearchResult] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="search"):
            yield Input(self.query_text, placeholder='words or "a phrase"', id="search-query")
            yield Static(id="search-status")
            yield OptionList(id="search-results")

    def on_mount(self) -> None:
        if self.query_text:
            self.run_search(self.query_text, 0)

    @on(Input.Submitted, "#search-query")
    def _submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value
        self.run_search(event.value, 0)

    def action_toggle_order(self) -> None:
        self.order = "best" if self.order == "newest" else "newest"
        if self.query_text:
            self.run_search(self.query_text, 0)

    @work(exclusive=True, group="search")
    async def run_search(self, query: str, offset: int) -> None:
        status = self.query_one("#search-status", Static)
        status.update(Text("Searching…"))
        try:
            page = await self.client.search(self.room, query, order=self.order, offset=offset)
        except ClientError as exc:
            status.update(Text(str(exc)))
            return
        results = self.query_one(OptionList)
        if offset == 0:
            self._results = []
            results.clear_options()
        else:
            results.remove_option(MORE)
        self._results += page.results
        results.add_options(Option(result_line(r), id=str(r.message.id)) for r in page.results)
        if page.more:
            results.add_option(Option(Text("… more results (Enter)"), id=MORE))
        found = len(self._results)
        status.update(
            Text(f"{found}{'+' if page.more else ''} found, {self.order} first (ctrl+o: order)")
        )
        if found and offset == 0:
            results.highlighted = 0
            self.set_focus(results)

    @on(OptionList.OptionSelected, "#search-results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == MORE:
            self.run_search(self.query_text, len(self._results))
            return
        self.dismiss(int(event.option.id or 0))

    def action_cancel(self) -> None:
        self.dismiss(None)
