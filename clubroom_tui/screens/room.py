"""One room: the conversation, its members, and the box to write in."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from clubroom_tui.client import (
    ClientError,
    ClubroomClient,
    MembersChanged,
    MessagesAdded,
    PendingSend,
    RequestFailed,
    RoomLost,
    SendDelayed,
    StateChanged,
)
from clubroom_tui.news import ClientNews
from clubroom_tui.widgets.composer import Composer
from clubroom_tui.widgets.member_list import MemberList
from clubroom_tui.widgets.message_log import MessageLog, Notice
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import room_key

SENDING = "sending…"
QUEUED = "queued until the connection is back"
SLOWED = "slow down: waiting to send"


class RoomScreen(Screen[None]):
    """The room's name and connection state on top, the log, members and composer below."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Dashboard"),
        Binding("ctrl+l", "leave", "Leave room"),
        Binding("ctrl+t", "toggle_members", "Members"),
        Binding("pageup", "page_up", "Older", show=False),
        Binding("pagedown", "page_down", "Newer", show=False),
    ]

    class Left(Message):
        """The user left the room for good (it is gone if they were the last one)."""

        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    def __init__(
        self, client: ClubroomClient, room: str, notices: list[Notice] | None = None
    ) -> None:
        super().__init__()
        self.client = client
        self.room = room
        self.notices = notices or []  # earlier comings and goings, kept by the app
        self.key = room_key(room)
        self.me = client.username or ""
        self._loading_older = False
        self._stored: dict[int, str] = {}  # message id → nonce, until the id is shown

    def compose(self) -> ComposeResult:
        yield StatusBar(f"# {self.room}", user=self.me)
        with Horizontal(id="room-body"):
            yield MessageLog(self.me, id="log")
            yield MemberList(self.me, id="members")
        yield Static(id="room-notice")
        with Horizontal(id="composer-row"):
            yield Composer(self.room, id="composer")
            yield Button("Leave", id="leave", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        state = self.client.rooms.get(self.key)
        log = self.query_one(MessageLog)
        if state is not None:
            log.load(state.messages, self.notices)
            self.query_one(MemberList).show(state.members)
        for item in self.client.pending_sends(self.room):
            self._track(item)
        self.query_one(Composer).focus()

    def notice(self, text: str) -> None:
        self.query_one("#room-notice", Static).update(Text(text))

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
        elif isinstance(event, SendDelayed):
            self.notice(f"Slow down: your message goes out in {event.retry_after:.1f} s.")
            self._restatus(SLOWED)
        elif isinstance(event, RoomLost):
            self.notice(f"This room is gone: {event.reason}")

    def _show_messages(self, event: MessagesAdded) -> None:
        log = self.query_one(MessageLog)
        log.add_messages(event.messages)
        for message in event.messages:
            nonce = self._stored.pop(message.id, None)
            if nonce is not None:
                log.drop_outgoing(nonce)

    def _show_members(self, event: MembersChanged) -> None:
        self.query_one(MemberList).show(event.members)
        notice = Notice.member_change(event.joined, event.left)
        if notice is not None:
            self.query_one(MessageLog).add_notice(notice)

    def _restatus(self, status: str | None = None) -> None:
        """Relabel the messages on their way after the connection or the limit changed."""
        log = self.query_one(MessageLog)
        default = SENDING if self.client.ready else QUEUED
        for item in self.client.pending_sends(self.room):
            if not item.future.done():
                log.show_outgoing(item.nonce, item.text, status or default)

    # -- sending -----------------------------------------------------------------

    @on(Composer.Ready)
    def _send(self, event: Composer.Ready) -> None:
        try:
            item = self.client.queue_send(self.room, event.text)
        except RequestFailed as exc:
            self.query_one(Composer).restore(event.text)
            self.notice(exc.message)
            return
        self.notice("")
        self._track(item)

    def _track(self, item: PendingSend) -> None:
        status = SENDING if self.client.ready else QUEUED
        self.query_one(MessageLog).show_outgoing(item.nonce, item.text, status)
        self.await_send(item)

    @work(group="sends")
    async def await_send(self, item: PendingSend) -> None:
        """Wait for the server to store it; on failure the text goes back into the box."""
        log = self.query_one(MessageLog)
        try:
            message = await asyncio.shield(item.future)
        except ClientError as exc:
            log.drop_outgoing(item.nonce)
            self.query_one(Composer).restore(item.text)
            self.notice(f"Not sent: {exc}")
            return
        if message.id in log.shown_ids:
            log.drop_outgoing(item.nonce)
        else:
            self._stored[message.id] = item.nonce  # the line swaps when the message arrives
        self.notice("")
        self._restatus()

    # -- older messages --------------------------------------------------------------

    @on(MessageLog.NearTop)
    def _near_top(self) -> None:
        state = self.client.rooms.get(self.key)
        if state is not None and state.has_older and not self._loading_older:
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

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_members(self) -> None:
        members = self.query_one(MemberList)
        members.display = not members.display

    def action_page_up(self) -> None:
        self.query_one(MessageLog).action_page_up()

    def action_page_down(self) -> None:
        self.query_one(MessageLog).action_page_down()

    @on(Button.Pressed, "#leave")
    def _leave_pressed(self) -> None:
        self.action_leave()

    def action_leave(self) -> None:
        self.leave()

    @work(exclusive=True, group="leave")
    async def leave(self) -> None:
        try:
            await self.client.leave_room(self.room)
        except ClientError as exc:
            self.notice(f"Could not leave: {exc}")
            return
        self.post_message(self.Left(self.room))
