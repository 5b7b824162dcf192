"""The scrolling conversation: messages, join/leave notices, day separators, outgoing text.

Everything other people wrote goes through ``plain()``: it is shown exactly as
typed and can never be markup or a terminal escape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar, Literal

from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Click, Resize
from textual.message import Message as TextualMessage
from textual.reactive import reactive
from textual.widgets import RichLog

from clubroom_tui.plain import plain
from protocol import Message, Reaction, mentioned_keys, parse_time, username_key

Action = Literal["edit", "delete", "react", "reply", "copy"]


@dataclass(frozen=True)
class Notice:
    """A line about the room rather than in it, such as "bob joined"."""

    text: str
    at: datetime

    @classmethod
    def member_change(cls, joined: str | None, left: str | None) -> Notice | None:
        """The notice for someone entering or leaving, or None for a plain snapshot."""
        now = datetime.now().astimezone()
        if joined:
            return cls(f"→ {joined} joined the room", now)
        if left:
            return cls(f"← {left} left the room", now)
        return None


Entry = Message | Notice


def local_time(entry: Entry) -> datetime:
    """When the entry happened, in the reader's local time zone."""
    if isinstance(entry, Notice):
        return entry.at
    return parse_time(entry.at).astimezone()


def day_label(day: date) -> str:
    return day.strftime("%A %d %B %Y")


MAX_ENTRIES = 2000  # kept in memory; older ones come back from the server when scrolled to


class MessageLog(RichLog):
    """The room's conversation, oldest at the top; it keeps its entries to redraw on resize.

    A new message costs the same however long the room is: it is wrapped and
    appended, never a redraw of the whole log. Only a width change (re-wrap)
    and older history arriving at the top redraw, at most ``MAX_ENTRIES``.

    "Following" means the reader is at the bottom: the log then stays at the
    bottom through new messages and resizes. A reader who scrolled up stays
    where they are, and the log counts what arrived below (``unseen``).

    A room entered with unread messages (``read_up_to`` set before ``load``)
    opens at its "new messages" divider rather than at the bottom, when what
    is below the divider does not fit: the reader starts where they left off,
    and the log is not "following" (nor the room read) until they scroll down.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "message-log--time",
        "message-log--author",
        "message-log--mine",
        "message-log--notice",
        "message-log--day",
        "message-log--selected",
        "message-log--dim",
        "message-log--divider",
        "message-log--mention",
    }
    # While the log has the focus, up/down choose a message and a letter acts on it.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "select(-1)", "Previous", show=False),
        Binding("down", "select(1)", "Next", show=False),
        Binding("e", "act('edit')", "Edit"),
        Binding("d", "act('delete')", "Delete"),
        Binding("r", "act('react')", "React"),
        Binding("t", "act('reply')", "Reply"),
        Binding("enter", "act('reply')", "Reply", show=False),
        Binding("c", "act('copy')", "Copy"),
        Binding("escape", "done", "Back to writing"),
    ]

    # The chosen message stands out in any theme (the app's CSS styles the rest).
    DEFAULT_CSS = """
    MessageLog > .message-log--selected { text-style: reverse; }
    """

    unseen: reactive[int] = reactive(0)

    class NearTop(TextualMessage):
        """The reader is at the top of the log, so older messages are wanted."""

    class Act(TextualMessage):
        """The reader asked to do something with the selected message."""

        def __init__(self, action: Action, message: Message) -> None:
            super().__init__()
            self.action = action
            self.message = message

    class Done(TextualMessage):
        """The reader is done choosing messages (Escape): back to the composer."""

    class AtBottom(TextualMessage):
        """The reader has come back to the bottom: the newest message is in view."""

    def __init__(
        self, me: str, *, on_done: Callable[[], None] | None = None, id: str | None = None
    ) -> None:
        super().__init__(wrap=True, markup=False, highlight=False, min_width=1, id=id)
        self.on_done = on_done  # called on Escape (else a ``Done`` message is posted)
        self.auto_scroll = False
        self.me = me.lower()
        self._entries: list[Entry] = []
        self._ids: set[int] = set()
        self._drawn_width = 0
        self._last_day: date | None = None
        self._moving = False  # our own scrolling, not the reader's
        self.following = True
        self._styles: dict[str, Style] = {}
        self.selected: int | None = None  # the id of the chosen message
        self._line_of: dict[int, int] = {}  # message id → its first line in the log
        self._line_count: dict[int, int] = {}  # message id → how many lines it takes
        self.read_up_to: int | None = None  # where "new messages" starts (None: no divider)
        self._divider_drawn = False
        self.divider_line: int | None = None  # the divider's line in the log, once drawn
        self._opening = False  # the first draw is still to place the reader at the divider
        self._at_divider = False  # the reader is still where the room opened, at the divider

    def on_mount(self) -> None:
        self.watch(self, "scroll_y", self._scrolled, init=False)

    # -- what the screen calls ----------------------------------------------

    def add_messages(self, messages: Iterable[Message]) -> None:
        """Add newer messages at the bottom; ones already shown are skipped."""
        fresh = [m for m in messages if m.id not in self._ids]
        if not fresh:
            return
        self._ids.update(m.id for m in fresh)
        self._entries.extend(fresh)
        self._append(fresh)

    def add_older(self, messages: Iterable[Message]) -> None:
        """Add older messages at the top, keeping the reader's place."""
        fresh = sorted((m for m in messages if m.id not in self._ids), key=lambda m: m.id)
        if not fresh:
            return
        self._ids.update(m.id for m in fresh)
        self._entries[:0] = fresh
        self._redraw(prepended=True)

    def add_notice(self, notice: Notice) -> None:
        self._entries.append(notice)
        self._append([notice])

    def load(self, messages: Iterable[Message], notices: Iterable[Notice]) -> None:
        """Start from what is known: messages and earlier notices, merged by time.

        With a read marker set, the first draw opens at the divider; until
        then the reader is not taken to be at the bottom.
        """
        fresh = [m for m in messages if m.id not in self._ids][-MAX_ENTRIES:]
        self._ids.update(m.id for m in fresh)
        self._entries = sorted([*self._entries, *fresh, *notices], key=local_time)
        if self.read_up_to is not None and not self._drawn_width:
            self._opening = True
            self.following = False
        self._redraw()

    @property
    def sees_newest(self) -> bool:
        """Is the newest message drawn and in the reader's view (so the room can be marked read)?"""
        return bool(self._drawn_width) and self.following and not self.unseen

    def update_messages(self, messages: Iterable[Message]) -> None:
        """Show the current state of messages already shown (edited, deleted, reacted to)."""
        changed = {m.id: m for m in messages if m.id in self._ids}
        if not changed:
            return
        self._entries = [
            changed.get(e.id, e) if isinstance(e, Message) else e for e in self._entries
        ]
        self._redraw()

    @property
    def messages(self) -> list[Message]:
        return [e for e in self._entries if isinstance(e, Message)]

    @property
    def selected_message(self) -> Message | None:
        return next((m for m in self.messages if m.id == self.selected), None)

    def select(self, message_id: int | None) -> None:
        """Choose a message (and bring it into view), or none.

        Only the two messages concerned are drawn again, in place: a redraw
        of the whole log took about a second per key with 2,000 messages.
        """
        if message_id == self.selected:
            return
        before, self.selected = self.selected, message_id
        if not (self._restyle(before) and self._restyle(message_id)):
            self._redraw()
        if message_id is not None:
            self._show_line(self._line_of.get(message_id))

    def _restyle(self, message_id: int | None) -> bool:
        """Draw one message's lines again in place; False if that cannot be done."""
        if message_id is None:
            return True
        message = next((m for m in self.messages if m.id == message_id), None)
        start, count = self._line_of.get(message_id), self._line_count.get(message_id)
        if message is None or start is None or count is None or not self._drawn_width:
            return message is None
        kept, size, widest = self.lines, self.virtual_size, self._widest_line_width
        self.lines = []
        try:
            self._write_message(message, local_time(message))
            fresh = self.lines
        finally:
            self.lines, self.virtual_size, self._widest_line_width = kept, size, widest
        if len(fresh) != count:
            return False
        self.lines[start : start + count] = fresh
        self._line_cache.clear()
        self.refresh()
        return True

    def _show_line(self, line: int | None) -> None:
        if line is None:
            return
        height = self.scrollable_content_region.height
        if not self.scroll_y <= line < self.scroll_y + height - 2:
            self._move_to(max(0, line - height // 3))
        self._follow(self._at_bottom())

    def action_select(self, step: int) -> None:
        """Move the choice one message up or down (the newest when none is chosen)."""
        ids = [m.id for m in self.messages]
        if not ids:
            return
        if self.selected not in ids:
            self.select(ids[-1])
            return
        index = ids.index(self.selected) + step
        if index < 0:
            self._check_top()  # at the oldest: fetch older ones
        self.select(ids[min(max(index, 0), len(ids) - 1)])

    def action_act(self, action: Action) -> None:
        message = self.selected_message
        if message is not None:
            self.post_message(self.Act(action, message))

    def action_done(self) -> None:
        """Escape: no message chosen; the screen moves the focus now, in the key's turn.

        Keys typed right after Escape must land where the focus goes (the
        composer), not in the log, where they vanished while a posted
        message waited its turn.
        """
        self.select(None)
        if self.on_done is not None:
            self.on_done()
        else:
            self.post_message(self.Done())

    def on_click(self, event: Click) -> None:
        """A click on a message chooses it (and gives the log the focus)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        line = offset.y + round(self.scroll_y)
        for message_id, start in self._line_of.items():
            if start <= line < start + self._line_count.get(message_id, 1):
                self.select(message_id)
                return

    def on_focus(self) -> None:
        if self.selected is None:
            self.action_select(1)

    @property
    def shown_ids(self) -> frozenset[int]:
        return frozenset(self._ids)

    def has_shown(self, message_id: int) -> bool:
        return message_id in self._ids

    @property
    def oldest_id(self) -> int | None:
        """The id of the oldest message held, to know what to fetch above it."""
        for entry in self._entries:
            if isinstance(entry, Message):
                return entry.id
        return None

    def jump_to_newest(self) -> None:
        """Go to the bottom and follow the conversation again."""
        self.unseen = 0
        self._to_bottom()
        self._follow(True)

    # -- drawing -------------------------------------------------------------

    def on_resize(self, _event: Resize) -> None:
        """Re-wrap everything when the text width changes (RichLog alone would not).

        Only the width of the text area counts: the height changes with every
        send (the outbox under the log grows and shrinks), and re-wrapping the
        whole log for that made each send cost as much as the room was long.
        """
        if self._text_width() and self._text_width() != self._drawn_width:
            self.call_after_refresh(self._redraw)
        elif self.following:
            self.call_after_refresh(self._to_bottom)

    def _text_width(self) -> int:
        return self.scrollable_content_region.width

    def _append(self, entries: list[Entry]) -> None:
        if not self._drawn_width:
            return  # drawn on the first resize
        for entry in entries:
            self._write_entry(entry)
        if self.following:
            self._trim()
            self._to_bottom()
        else:
            self.unseen += sum(1 for e in entries if isinstance(e, Message))

    def _trim(self) -> None:
        """Forget the oldest entries beyond the cap (the server still has them)."""
        excess = len(self._entries) - MAX_ENTRIES
        if excess <= MAX_ENTRIES // 10:
            return  # trim in batches, so the cost is spread thin
        dropped, self._entries = self._entries[:excess], self._entries[excess:]
        self._ids.difference_update(e.id for e in dropped if isinstance(e, Message))
        self._redraw()

    def _redraw(self, prepended: bool = False) -> None:
        if not self._text_width():
            return
        old_y, old_count = self.scroll_y, len(self.lines)
        self._moving = True
        try:
            self.clear()
            self._last_day = None
            self._divider_drawn = False
            self._line_of, self._line_count = {}, {}
            self.divider_line = None
            for entry in self._entries:
                self._write_entry(entry)
            self._drawn_width = self._text_width()
        finally:
            self._moving = False
        if self._opening or (prepended and self._at_divider):
            # Older messages arriving while the reader has not moved (the read
            # marker was older than the first page) move the divider: follow it.
            self._opening = False
            self._open_at_divider()
        elif self.following and not prepended:
            self._to_bottom()
        else:
            shift = len(self.lines) - old_count if prepended else 0
            self._move_to(old_y + shift)
        self._check_top()

    def _open_at_divider(self) -> None:
        """Show the divider near the top (a line of what was read above it), or the bottom.

        When everything from the divider down fits, the bottom is where the
        reader starts, following: they see every new message at once.
        """
        line = self.divider_line
        top = max(0, line - 1) if line is not None else None
        if top is None or top >= self.max_scroll_y:
            self._at_divider = False
            self._to_bottom()
            self._follow(True)
            return
        self._at_divider = True
        self._move_to(top)
        self._follow(False)

    def _follow(self, following: bool) -> None:
        """Record whether the reader is at the bottom; coming back there is news to the screen."""
        if following:
            self._at_divider = False
        if following and not self.following:
            self.post_message(self.AtBottom())
        self.following = following

    def _to_bottom(self) -> None:
        self._move_to(None)

    def _move_to(self, y: float | None) -> None:
        """Scroll without the move counting as the reader's (which would change following)."""
        self._moving = True
        try:
            if y is None:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
            else:
                self.scroll_to(y=y, animate=False, immediate=True)
        finally:
            self._moving = False

    def _write_entry(self, entry: Entry) -> None:
        moment = local_time(entry)
        if moment.date() != self._last_day:
            self._last_day = moment.date()
            self._write_line(self._day_line(moment.date()))
        if isinstance(entry, Message):
            if self._starts_new(entry):
                self._divider_drawn = True
                self.divider_line = len(self.lines)
                self._write_line(self._divider_line())
            start = self._line_of[entry.id] = len(self.lines)
            self._write_message(entry, moment)
            self._line_count[entry.id] = len(self.lines) - start
        else:
            self._write_line(self._notice_line(entry, moment))

    def _write_line(self, line: Text) -> None:
        """Write wrapped to exactly the visible width (the console's may differ)."""
        self.write(line, width=max(1, self._text_width()), scroll_end=False)

    def _style(self, name: str) -> Style:
        """A component style, looked up once per theme (the lookup costs more than the line)."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(
                f"message-log--{name}", partial=True
            )
        return style

    def notify_style_update(self) -> None:
        """The theme or CSS changed: forget the looked-up styles."""
        self._styles = {}
        super().notify_style_update()

    def _starts_new(self, message: Message) -> bool:
        """Is this the first message (by someone else) past the read marker the room opened at?"""
        return (
            self.read_up_to is not None
            and not self._divider_drawn
            and message.id > self.read_up_to
            and message.author.lower() != self.me
        )

    def _divider_line(self) -> Text:
        return Text("── new messages ──", style=self._style("divider"), justify="center")

    def _day_line(self, day: date) -> Text:
        return Text(f"── {day_label(day)} ──", style=self._style("day"), justify="center")

    def _write_message(self, message: Message, moment: datetime) -> None:
        selected = message.id == self.selected
        for line in self._message_lines(message, moment):
            if selected:
                line.stylize(self._style("selected"))
            self._write_line(line)

    def _message_lines(self, message: Message, moment: datetime) -> list[Text]:
        """A message: what it replies to, itself (or its tombstone), its reactions."""
        lines: list[Text] = []
        dim = self._style("dim")
        if message.reply_to is not None:
            ref = message.reply_to
            answered = "message deleted" if ref.deleted else ref.excerpt.replace("\n", " ")
            lines.append(Text.assemble(("  ↪ ", dim), plain(f"{ref.author}: {answered}", dim)))
        if message.deleted:
            clock = (moment.strftime("%H:%M"), self._style("time"))
            lines.append(
                Text.assemble(clock, " ", plain(message.author, dim), (": message deleted", dim))
            )
        else:
            head, body = self._message_parts(message, moment)
            if message.edited_at is not None:
                body.append(" (edited)", dim)
            lines.extend(hanging_indent(head, body, self._text_width(), self.app.console))
        if message.reactions:
            lines.append(reaction_line(message.reactions, dim, self._style("mine")))
        return lines

    def _mentions_me(self, message: Message) -> bool:
        """Does the text ``@``-name the reader (as the server counts mentions)?"""
        return username_key(self.me) in mentioned_keys(message.text)

    def _notice_line(self, notice: Notice, moment: datetime) -> Text:
        clock = (moment.strftime("%H:%M"), self._style("time"))
        return Text.assemble(clock, " ", plain(notice.text, self._style("notice")))

    def _message_parts(self, message: Message, moment: datetime) -> tuple[Text, Text]:
        """``HH:MM author: `` and the text, apart, so the text can hang under itself."""
        mine = message.author.lower() == self.me
        text_style = self._style("mine") if mine else Style()
        if not mine and self._mentions_me(message):
            text_style = self._style("mention")  # stands out when scrolling back, too
        author_style = self._style("mine") if mine else self._style("author")
        head = Text.assemble(
            (moment.strftime("%H:%M"), self._style("time")),
            " ",
            plain(message.author, author_style),
            (": ", text_style),
            end="",
        )
        return head, plain(message.text, text_style)

    # -- scrolling -----------------------------------------------------------

    def _at_bottom(self) -> bool:
        return self.scroll_y >= self.max_scroll_y

    def _scrolled(self, _old: float, _new: float) -> None:
        if self._moving:
            return
        self._at_divider = False  # the reader moved: from now on their place is theirs
        at_bottom = self._at_bottom()
        if at_bottom:
            self.unseen = 0
        self._follow(at_bottom)
        self._check_top()

    def _check_top(self) -> None:
        if self._drawn_width and self.scroll_y <= 0:
            self.post_message(self.NearTop())

    def action_scroll_home(self) -> None:
        super().action_scroll_home()
        self._check_top()

    def action_page_up(self) -> None:
        super().action_page_up()
        self._check_top()

    def action_scroll_up(self) -> None:
        super().action_scroll_up()
        self._check_top()


def hanging_indent(head: Text, body: Text, width: int, console: Console) -> list[Text]:
    """The head then the body wrapped beside it: every further line starts under the text.

    Lines of a multi-line message (and wrapped long lines) line up under the
    first character of the text, not under the time, as in IRC clients, so a
    message reads as one block. A head wider than half the log (a very long
    name on a narrow terminal) leaves the text to wrap under the time instead.
    """
    indent = head.cell_len
    if width <= 0 or indent > width // 2:
        return [Text.assemble(head, body, end="")]
    pad = Text(" " * indent, end="")
    wrapped = body.wrap(console, width - indent, overflow="fold") or [Text(end="")]
    return [Text.assemble(head if n == 0 else pad, line, end="") for n, line in enumerate(wrapped)]


def reaction_line(reactions: list[Reaction], style: Style, mine: Style) -> Text:
    """Compact counts under a message, such as ``👍 2  :tada: 1``; the reader's own stand out."""
    line = Text("      ")
    for n, reaction in enumerate(reactions):
        if n:
            line.append("  ")
        counted = f"{reaction.emoji} {reaction.count}"
        line.append_text(plain(counted, mine if reaction.mine else style))
    return line
