"""One room: the conversation, its members, and the box to write in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from clubroom_tui import commands
from clubroom_tui.client import (
    ClientError,
    ClubroomClient,
    MembersChanged,
    MessagesAdded,
    MessagesChanged,
    PendingSend,
    RequestFailed,
    RoomInfoChanged,
    RoomLost,
    RoomState,
    SendDelayed,
    StateChanged,
    TypingChanged,
)
from clubroom_tui.doomed import is_last_member, what_goes
from clubroom_tui.drafts import Draft
from clubroom_tui.news import ClientNews
from clubroom_tui.plain import printable
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.screens.room_actions import MessageActions
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.member_list import MemberList
from clubroom_tui.widgets.message_log import MessageLog, Notice
from clubroom_tui.widgets.outbox import Outbox
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import HISTORY_MAX, MAX_TEXT_LENGTH, TYPING_RELAY_SECONDS, TypingState, room_key

SENDING = "sending…"
QUEUED = "queued until the connection is back"
SLOWED = "slow down: waiting to send"


class RoomScreen(MessageActions, Screen[None]):
    """The room's name and connection state on top, the log, members and composer below."""

    # Narrower than this, the member list (22 columns) would leave the log a
    # sliver: it starts hidden there; ctrl+t still shows it (see clubroom.tcss).
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (70, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Dashboard"),
        # The same key while editing or replying: the footer says what it does then.
        Binding("escape", "cancel_compose", "Cancel edit/reply"),
        Binding("ctrl+t", "toggle_members", "Members"),
        Binding("ctrl+end", "jump_down", "Newest", show=False),
        Binding("pageup", "page_up", "Older", show=False),
        Binding("pagedown", "page_down", "Newer", show=False),
        Binding("ctrl+up", "choose_message", "Choose message"),
        Binding("ctrl+f", "search", "Search"),
    ]

    class Left(Message):
        """The user left the room for good (it is gone if they were the last one)."""

        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    def __init__(
        self,
        client: ClubroomClient,
        room: str,
        notices: list[Notice] | None = None,
        draft: Draft | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.room = room
        self.notices = notices or []  # earlier comings and goings, kept by the app
        self.draft = draft or Draft()  # the unsent text, kept by the app across rooms
        self.key = room_key(room)
        self.me = client.username or ""
        self._loading_older = False
        self._stored: dict[int, str] = {}  # message id → nonce, until the id is shown
        self._said_too_long = False
        self._typing_state = TypingState.DONE
        self._typing_at = 0.0
        self._marked = 0

    def compose(self) -> ComposeResult:
        yield StatusBar(self._place(), user=self.me)
        with Horizontal(id="room-body"):
            with Vertical(id="conversation"):
                yield MessageLog(self.me, on_done=self.back_to_writing, id="log")
                yield Static(id="new-below")
                yield Static(id="typing-line")
                yield Outbox(id="outbox")
            yield MemberList(self.me, id="members")
        yield Static(id="connection-notice")
        yield Static(id="room-notice")
        yield Static(id="action-notice")
        with Horizontal(id="composer-row"):
            yield Composer(self.room, self._member_names, id="composer")
            leave = Button("Leave", id="leave", variant="error")
            leave.can_focus = False  # no key can reach it by accident; it asks first anyway
            yield leave
        yield Footer()

    def on_mount(self) -> None:
        state = self.client.rooms.get(self.key)
        log = self.query_one(MessageLog)
        if state is not None:
            log.read_up_to = unread_from(state)
            log.load(state.messages, self.notices)
            self._show_member_list(state.members)
        for item in self.client.pending_sends(self.room):
            self._track(item)
        self.watch(log, "unseen", self._show_unseen)
        if state is not None:
            self._show_typing(state.typing)
        self.call_after_refresh(self._mark_read_if_seen)
        self.watch(self.app, "connection_detail", self._show_connection)
        self.query_one("#action-notice", Static).display = False
        self._restore_draft()
        self.set_focus(self.query_one(Composer))

    def _restore_draft(self) -> None:
        """Put back what was being written here, quietly (no typing event for an old draft)."""
        composer = self.query_one(Composer)
        composer.last_sent = self.draft.last_sent
        if self.draft.text:
            with composer.prevent(Composer.Changed):
                composer.value = self.draft.text

    def notice(self, text: str) -> None:
        show_line(self.query_one("#room-notice", Static), text)

    @property
    def reading_live(self) -> bool:
        """Does the reader see what arrives now (the log at the bottom, nothing unseen)?

        Before the log is drawn it is not known; new messages then count as unread.
        """
        return self.is_mounted and self.query_one(MessageLog).sees_newest

    def _member_names(self) -> list[str]:
        state = self.client.rooms.get(self.key)
        return [m for m in state.members if m.casefold() != self.me.casefold()] if state else []

    def _show_unseen(self, count: int) -> None:
        if count == 0:
            self.call_after_refresh(self._mark_read_if_seen)
        hint = self.query_one("#new-below", Static)
        hint.display = count > 0
        if count:
            plural = "s" if count != 1 else ""
            hint.update(Text(f"↓ {count} new message{plural} below (ctrl+end)"))

    def _show_connection(self, detail: str) -> None:
        """While not connected, say so and when the next try is (the header says the state)."""
        online = self.client.ready
        show_line(self.query_one("#connection-notice", Static), "" if online else detail)
        state = self.client.rooms.get(self.key)
        if state is not None:
            self._show_member_list(state.members)

    def _show_member_list(self, members: tuple[str, ...]) -> None:
        state = self.client.rooms.get(self.key)
        self.query_one(MemberList).show(
            members,
            online=self.client.ready,
            owner=state.owner if state else None,
            typing=state.typing if state else (),
        )

    def _place(self) -> str:
        """The header: the room, its topic and its owner."""
        state = self.client.rooms.get(self.key)
        place = f"# {self.room}"
        if state is not None and state.topic:
            place += f" — {state.topic}"
        if state is not None and state.owner:
            place += f" (owner {state.owner})"
        return place

    def _show_info(self) -> None:
        self.query_one(StatusBar).place = self._place()
        state = self.client.rooms.get(self.key)
        if state is not None:
            self._show_member_list(state.members)

    def _show_typing(self, typing: tuple[str, ...]) -> None:
        show_line(self.query_one("#typing-line", Static), typing_line(typing))
        self._show_info()

    # -- news from the connection ---------------------------------------------------

    def on_client_news(self, news: ClientNews) -> None:
        event = news.event
        if isinstance(event, StateChanged):
            self._restatus()
            return
        if room_key(getattr(event, "room", "")) != self.key:
            return
        if isinstance(event, MessagesAdded):
            self._show_messages(event)
        elif isinstance(event, MembersChanged):
            self._show_members(event)
        elif isinstance(event, MessagesChanged):
            self.show_changes(event)
        elif isinstance(event, SendDelayed):
            self.notice(f"Slow down: your message goes out in {event.retry_after:.1f} s.")
            self._restatus(SLOWED)
        elif isinstance(event, RoomLost):
            self.notice(f"This room is gone: {event.reason}")
        elif isinstance(event, RoomInfoChanged):
            self._show_info()
            if event.by is not None:
                self.notice(f"{event.by} set the topic: {event.topic or '(none)'}")
        elif isinstance(event, TypingChanged):
            self._show_typing(event.typing)

    def _show_messages(self, event: MessagesAdded) -> None:
        self.query_one(MessageLog).add_messages(event.messages)
        self.call_after_refresh(self._mark_read_if_seen)
        outbox = self.query_one(Outbox)
        for message in event.messages:
            nonce = self._stored.pop(message.id, None)
            if nonce is not None:
                outbox.drop(nonce)

    def _show_members(self, event: MembersChanged) -> None:
        self._show_member_list(event.members)
        notice = Notice.member_change(event.joined, event.left)
        if notice is not None:
            self.query_one(MessageLog).add_notice(notice)

    def _restatus(self, status: str | None = None) -> None:
        """Relabel the messages on their way after the connection or the limit changed."""
        outbox = self.query_one(Outbox)
        default = SENDING if self.client.ready else QUEUED
        for item in self.client.pending_sends(self.room):
            if not item.future.done():
                outbox.show(item.nonce, item.text, status or default)

    # -- sending -----------------------------------------------------------------

    @on(Composer.Ready)
    def _send(self, event: Composer.Ready) -> None:
        if self.take_composed(event.text):  # an edit, or /search
            return
        parsed = commands.parse(event.text, admin=self.client.is_admin)
        if isinstance(parsed, commands.Unknown):
            self.query_one(Composer).restore(event.text)
            self.notice(parsed.hint)
            return
        self._remember_sent(event.text)
        if isinstance(parsed, commands.Command):
            self.run_command(parsed, event.text)
            return
        self._typing_state = TypingState.DONE  # the server ends it when the message arrives
        self._queue_text(parsed)

    def _remember_sent(self, line: str) -> None:
        """Up in the empty box brings this line back, in this room, even after switching."""
        self.draft.last_sent = line
        self.query_one(Composer).last_sent = line

    def _queue_text(self, text: str) -> None:
        target = self.reply_target()
        try:
            item = self.client.queue_send(self.room, text, reply_to=target.id if target else None)
        except RequestFailed as exc:
            self.resume_reply(target)
            self.query_one(Composer).restore(text)
            self.notice(exc.message)
            return
        self.notice("")
        self._track(item)
        log = self.query_one(MessageLog)
        if not log.following:  # who sends is in the conversation: show where it goes on
            log.jump_to_newest()

    # -- commands (issue 15) -----------------------------------------------------

    @work(group="commands")
    async def run_command(self, command: commands.Command, line: str) -> None:
        """Do a slash command; on failure the line goes back into the box with the reason."""
        try:
            await self._do(command)
        except ClientError as exc:
            self.query_one(Composer).restore(line)
            self.notice(f"/{command.name}: {exc}")

    async def _do(self, command: commands.Command) -> None:
        name, args = command.name, command.args
        if name == "help":
            self.notice(commands.help_text(admin=self.client.is_admin))
        elif name == "admin":
            self.app.open_admin()  # type: ignore[attr-defined]
        elif name == "who":
            self.notice(self._who())
        elif name == "quit":
            await self.app.action_quit()
        elif name == "leave":
            self.action_leave()
        elif name == "me":
            if not args:
                raise ClientError("say what you are doing: /me waves")
            self._queue_text(f"* {self.me} {args}")
        elif name == "join":
            if not args:
                raise ClientError("name a room: /join ROOM")
            joined = await self.client.join_room(args)
            self.app.open_room(joined.room)  # type: ignore[attr-defined]
        elif name == "msg":
            await self._direct(command)
        elif name == "topic":
            await self._topic(args)
        else:
            await self._moderate(command)

    async def _topic(self, args: str) -> None:
        if not args:
            state = self.client.rooms.get(self.key)
            self.notice(f"Topic: {state.topic}" if state and state.topic else "No topic set.")
            return
        await self.client.set_topic(self.room, "" if args == "-" else args)
        self.notice("")

    async def _direct(self, command: commands.Command) -> None:
        words = command.words(2)
        if not words:
            raise ClientError("name someone: /msg USER [TEXT]")
        joined = await self.client.direct(words[0])
        if len(words) > 1:
            self.client.queue_send(joined.room, words[1])
        self.app.open_room(joined.room)  # type: ignore[attr-defined]

    async def _moderate(self, command: commands.Command) -> None:
        """/kick, /ban, /unban, /invite USER [REASON]: the server checks who may."""
        words = command.words(2)
        if not words:
            raise ClientError(f"name someone: /{command.name} USER")
        user, reason = words[0].removeprefix("@"), words[1] if len(words) > 1 else ""
        if command.name == "kick":
            await self.client.kick(self.room, user, reason)
            done = f"{user} was removed from the room."
        elif command.name == "ban":
            await self.client.ban(self.room, user, reason)
            done = f"{user} is banned from the room."
        elif command.name == "unban":
            await self.client.unban(self.room, user)
            done = f"{user} may join again."
        else:
            await self.client.invite(self.room, user)
            done = f"{user} is invited."
        self.notice(done)

    def _who(self) -> str:
        state = self.client.rooms.get(self.key)
        if state is None:
            return "You are not in this room."
        names = ", ".join(
            name + (" (owner)" if state.owner and name.casefold() == state.owner.casefold() else "")
            for name in state.members
        )
        typing = typing_line(state.typing)
        return f"Members: {names}." + (f" {typing}" if typing else "")

    # -- reading and typing (issue 15) ------------------------------------------------

    def _mark_read_if_seen(self) -> None:
        """The reader sees the newest message: move the read marker there (once per message)."""
        log = self.query_one(MessageLog)
        state = self.client.rooms.get(self.key)
        if state is None or state.last_id is None or not log.sees_newest:
            return
        if state.last_id <= max(state.read_up_to, self._marked):
            return
        self._marked = state.last_id
        self.app.room_read(self.room)  # type: ignore[attr-defined]
        self.mark_read(state.last_id)

    @work(group="read-marker")
    async def mark_read(self, up_to: int) -> None:
        with contextlib.suppress(ClientError):  # the next message seen tries again
            await self.client.mark_read(self.room, up_to)

    def _typing_changed(self, value: str) -> None:
        """Tell the room we are typing, renewed at the protocol's pace; done when emptied."""
        now = time.monotonic()
        if value.strip() and not value.startswith("/"):
            if (
                self._typing_state is TypingState.ACTIVE
                and now - self._typing_at < TYPING_RELAY_SECONDS
            ):
                return
            self._typing_state, self._typing_at = TypingState.ACTIVE, now
            self.send_typing(TypingState.ACTIVE)
        elif self._typing_state is TypingState.ACTIVE:
            self._typing_state = TypingState.DONE
            self.send_typing(TypingState.DONE)

    @work(group="typing")
    async def send_typing(self, state: TypingState) -> None:
        with contextlib.suppress(ClientError):  # typing is a courtesy: never an error
            await self.client.typing(self.room, state)

    def _track(self, item: PendingSend) -> None:
        status = SENDING if self.client.ready else QUEUED
        self.query_one(Outbox).show(item.nonce, item.text, status)
        self.await_send(item)

    @work(group="sends")
    async def await_send(self, item: PendingSend) -> None:
        """Wait for the server to store it; on failure the text goes back into the box."""
        outbox = self.query_one(Outbox)
        try:
            message = await asyncio.shield(item.future)
        except ClientError as exc:
            outbox.drop(item.nonce)
            self.query_one(Composer).restore(item.text)
            self.notice(f"Not sent: {exc}")
            return
        if self.query_one(MessageLog).has_shown(message.id):
            outbox.drop(item.nonce)
        else:
            self._stored[message.id] = item.nonce  # the line swaps when the message arrives
        self.notice("")
        self._restatus()

    @on(MessageLog.AtBottom)
    def _reached_bottom(self) -> None:
        self.call_after_refresh(self._mark_read_if_seen)
        if not self.query_one(MessageLog).unseen:
            self.query_one("#new-below", Static).display = False  # a jump's way back is done

    def hint_newer_below(self) -> None:
        """After a jump into history: say how to get back to the newest messages."""
        hint = self.query_one("#new-below", Static)
        if not self.query_one(MessageLog).following:
            hint.update(Text("↓ newer messages below (ctrl+end)"))
            hint.display = True

    # -- older messages --------------------------------------------------------------

    @on(MessageLog.NearTop)
    def _near_top(self) -> None:
        state = self.client.rooms.get(self.key)
        if state is None:
            return
        log = self.query_one(MessageLog)
        oldest = log.oldest_id
        kept = [m for m in state.messages if oldest is not None and m.id < oldest]
        if kept:  # trimmed from the log earlier but still held by the client
            log.add_older(kept[-HISTORY_MAX:])
            return
        if state.has_older and not self._loading_older:
            self._loading_older = True
            self.load_older()

    @work(exclusive=True, group="history")
    async def load_older(self) -> None:
        self.notice("Loading older messages…")
        try:
            page = await self.client.history(self.room)
        except ClientError as exc:
            self.notice(f"Older messages could not be loaded: {exc}")
            return
        finally:
            self._loading_older = False
        self.notice("")
        self.query_one(MessageLog).add_older(page.messages)

    # -- keys ------------------------------------------------------------------------

    def cancel_action(self) -> bool:
        """End editing or replying; after an edit the draft written before it comes back."""
        was_editing = self.editing is not None
        done = super().cancel_action()
        if was_editing and self.draft.text:
            self.query_one(Composer).value = self.draft.text
        return done

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer the Escape that fits: back to the dashboard, or cancel the edit/reply."""
        composing = self.editing is not None or self.replying is not None
        if action == "back":
            return not composing
        if action == "cancel_compose":
            return composing
        return True

    def action_cancel_compose(self) -> None:
        self.cancel_action()

    def action_back(self) -> None:
        if self.cancel_action():  # (not offered while editing or replying; kept to be safe)
            return
        self.app.pop_screen()

    def action_toggle_members(self) -> None:
        members = self.query_one(MemberList)
        members.display = not members.display

    def action_page_up(self) -> None:
        self.query_one(MessageLog).action_page_up()

    def action_page_down(self) -> None:
        self.query_one(MessageLog).action_page_down()

    def action_jump_down(self) -> None:
        self.query_one(MessageLog).jump_to_newest()

    @on(Button.Pressed, "#leave")
    def _leave_pressed(self) -> None:
        self.action_leave()

    def action_leave(self) -> None:
        """Ask first, naming what goes if this user is the last member."""
        self.app.push_screen(Confirm(self._leave_question(), "Leave"), self._leave_answered)

    def _leave_question(self) -> str:
        state = self.client.rooms.get(self.key)
        if state is not None and is_last_member(self.client, state):
            return (
                f"Leave {what_goes(state)}? You are its last member: "
                "the room and every message in it will be deleted for good."
            )
        return f"Leave “{printable(self.room)}”? You can join it again later."

    def _leave_answered(self, yes: bool | None) -> None:
        if yes:
            self.leave()

    @work(exclusive=True, group="leave")
    async def leave(self) -> None:
        try:
            await self.client.leave_room(self.room)
        except ClientError as exc:
            self.notice(f"Could not leave: {exc}")
            return
        self.post_message(self.Left(self.room))

    # -- the draft -------------------------------------------------------------------

    @on(Composer.TooLong)
    def _too_long(self, event: Composer.TooLong) -> None:
        self.notice(too_long(event.length) + " Nothing was sent; the text is still in the box.")

    @on(Composer.Changed, "#composer")
    def _draft_changed(self, event: Composer.Changed) -> None:
        """Say at once when the draft passes the limit (a big paste), and by how much."""
        value = event.text_area.text
        if self.editing is None:  # an edit's text is not a draft to bring back elsewhere
            self.draft.text = value
        self._typing_changed(value)
        length = len(value)
        if length > MAX_TEXT_LENGTH:
            self.notice(too_long(length))
            self._said_too_long = True
        elif self._said_too_long:
            self._said_too_long = False
            self.notice("")


def unread_from(state: RoomState) -> int | None:
    """The read marker to draw "new messages" at, if anything arrived after it."""
    if state.last_id is None or state.last_id <= state.read_up_to:
        return None
    return state.read_up_to


def typing_line(typing: tuple[str, ...]) -> str:
    """``bob is typing…``, ``bob and carol are typing…``, ``4 people are typing…``."""
    names = [printable(name) for name in typing]
    if not names:
        return ""
    if len(names) == 1:
        return f"{names[0]} is typing…"
    if len(names) <= 3:
        return f"{', '.join(names[:-1])} and {names[-1]} are typing…"
    return f"{len(names)} people are typing…"


def too_long(length: int) -> str:
    over = length - MAX_TEXT_LENGTH
    return (
        f"This message is {length:,} characters, {over:,} over the {MAX_TEXT_LENGTH:,} limit; "
        f"remove {over:,} to send it."
    )


def show_line(line: Static, text: str) -> None:
    """Show a notice, or take no room at all when there is none (small terminals need it)."""
    line.update(Text(text))
    line.display = bool(text)
