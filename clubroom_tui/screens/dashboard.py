"""After logging in: create or join a room, see your rooms and their unread counts."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from clubroom_tui.client import ClientError, ClubroomClient
from clubroom_tui.news import ClientNews
from clubroom_tui.plain import plain
from clubroom_tui.widgets.room_list import RoomList
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import MAX_ROOM_NAME_LENGTH, room_key


class DashboardScreen(Screen[None]):
    """The greeting, "Create Room", "Join Room", your rooms, and "Log out"."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "focus_create", "Create room"),
        Binding("ctrl+g", "focus_join", "Join room"),
        Binding("ctrl+r", "focus_rooms", "Your rooms"),
        Binding("ctrl+o", "log_out", "Log out"),
    ]

    class RoomChosen(Message):
        """The user entered (or picked) a room they are now in."""

        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    class LoggedOut(Message):
        """The user logged out; the token is no longer valid."""

    def __init__(self, client: ClubroomClient, unread: dict[str, int]) -> None:
        super().__init__()
        self.client = client
        self.unread = unread

    def compose(self) -> ComposeResult:
        user = self.client.username or ""
        yield StatusBar("Dashboard", user=user)
        with Vertical(id="dashboard"):
            yield Static(Text.assemble("Hello, ", plain(user, "bold"), "!"), id="greeting")
            with Horizontal(classes="room-action"):
                yield Input(
                    placeholder="New room name", id="create-name", max_length=MAX_ROOM_NAME_LENGTH
                )
                yield Button("Create Room", variant="primary", id="create")
            with Horizontal(classes="room-action"):
                yield Input(
                    placeholder="Name of a room to join",
                    id="join-name",
                    max_length=MAX_ROOM_NAME_LENGTH,
                )
                yield Button("Join Room", id="join")
            yield Static(id="dashboard-error", classes="error")
            yield Label("Your rooms (Enter opens one)")
            yield RoomList(id="rooms")
            yield Button("Log out", id="logout")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_rooms()
        self.query_one("#create-name", Input).focus()

    def on_screen_resume(self) -> None:
        self.refresh_rooms()

    def on_client_news(self, _news: ClientNews) -> None:
        self.refresh_rooms()

    def refresh_rooms(self) -> None:
        """Show the rooms the client is in, with their unread counts."""
        rooms = sorted(self.client.rooms.values(), key=lambda state: state.name.lower())
        self.query_one(RoomList).show(
            (state.name, self.unread.get(room_key(state.name), 0)) for state in rooms
        )

    def show_error(self, text: str) -> None:
        self.query_one("#dashboard-error", Static).update(Text(text))

    # -- actions ---------------------------------------------------------------

    def action_focus_create(self) -> None:
        self.query_one("#create-name", Input).focus()

    def action_focus_join(self) -> None:
        self.query_one("#join-name", Input).focus()

    def action_focus_rooms(self) -> None:
        self.query_one(RoomList).focus()

    @on(Input.Submitted, "#create-name")
    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.enter_room(self.query_one("#create-name", Input).value, create=True)

    @on(Input.Submitted, "#join-name")
    @on(Button.Pressed, "#join")
    def _join(self) -> None:
        self.enter_room(self.query_one("#join-name", Input).value, create=False)

    @on(RoomList.Opened)
    def _open(self, event: RoomList.Opened) -> None:
        self.post_message(self.RoomChosen(event.room))

    @on(Button.Pressed, "#logout")
    def _logout_pressed(self) -> None:
        self.action_log_out()

    def action_log_out(self) -> None:
        self.log_out()

    # -- network work ------------------------------------------------------------

    @work(exclusive=True, group="rooms")
    async def enter_room(self, name: str, create: bool) -> None:
        if not name.strip():
            self.show_error("Type a room name first.")
            return
        self.show_error("")
        try:
            if create:
                joined = await self.client.create_room(name)
            else:
                joined = await self.client.join_room(name)
        except ClientError as exc:
            self.show_error(str(exc))
            return
        for field in ("#create-name", "#join-name"):
            self.query_one(field, Input).value = ""
        self.post_message(self.RoomChosen(joined.room))

    @work(exclusive=True, group="rooms")
    async def log_out(self) -> None:
        try:
            await self.client.logout()
        except ClientError:
            self.client.forget_session()  # unreachable: at least stop using the token here
        self.post_message(self.LoggedOut())
