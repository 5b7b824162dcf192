"""After logging in: create or join a room, see your rooms and their unread counts."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from clubroom_tui.client import ClientError, ClubroomClient, RequestFailed
from clubroom_tui.doomed import describe_rooms, rooms_deleted_by_leaving
from clubroom_tui.news import ClientNews
from clubroom_tui.plain import plain, printable
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.widgets.room_list import RoomList
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import MAX_ROOM_NAME_LENGTH, ErrorCode, room_key


class DashboardScreen(Screen[None]):
    """The greeting, "Create Room", "Join Room", your rooms, and "Log out"."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "focus_create", "Create room"),
        Binding("ctrl+g", "focus_join", "Join room"),
        Binding("ctrl+r", "focus_rooms", "Your rooms"),
        Binding("ctrl+o", "log_out", "Log out"),
        Binding("f2", "admin", "Admin"),  # administrators only (check_action)
        Binding("enter,ctrl+j", "enter", "Create / join", show=False, priority=True),
    ]

    class RoomChosen(Message):
        """The user entered (or picked) a room they are now in."""

        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    class LoggedOut(Message):
        """The user logged out; the token is no longer valid."""

    def __init__(self, client: ClubroomClient, unread: dict[str, int], notice: str = "") -> None:
        super().__init__()
        self.client = client
        self.unread = unread
        self.notice = notice

    def compose(self) -> ComposeResult:
        user = self.client.username or ""
        yield StatusBar("Dashboard", user=user)
        with Vertical(id="dashboard"):
            yield Static(Text.assemble("Hello, ", plain(user, "bold"), "!"), id="greeting")
            with Horizontal(classes="room-action"):
                yield Input(placeholder="New room name", id="create-name")
                yield Button("Create Room", variant="primary", id="create")
            with Horizontal(classes="room-action"):
                yield Input(placeholder="Name of a room to join", id="join-name")
                yield Button("Join Room", id="join")
            yield Static(id="dashboard-error", classes="error")
            yield Label("Your rooms (Enter opens one)")
            yield RoomList(id="rooms")
            yield Button("Log out", id="logout")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_rooms()
        self.show_error(self.notice)
        self.set_focus(self.query_one("#create-name", Input))
        self.set_interval(self.app.rooms_refresh_seconds, self._ask_server)  # type: ignore[attr-defined]

    def on_screen_resume(self) -> None:
        self.refresh_rooms()
        self._ask_server()

    def _ask_server(self) -> None:
        """The server's list of your rooms, with badges (rooms joined elsewhere included)."""
        stack = self.app.screen_stack  # empty while the app shuts down
        if stack and stack[-1] is self and self.client.ready:
            self.app.load_badges()  # type: ignore[attr-defined]

    def on_client_news(self, _news: ClientNews) -> None:
        self.refresh_rooms()

    def refresh_rooms(self) -> None:
        """Show the rooms the client is in, with their unread counts."""
        if not self.query(RoomList):
            return  # not composed yet, or being taken down: on_mount shows the list
        names: list[str] = self.app.your_rooms()  # type: ignore[attr-defined]
        mentions: dict[str, int] = getattr(self.app, "mentions", {})
        self.query_one(RoomList).show(
            (name, self.unread.get(room_key(name), 0), mentions.get(room_key(name), 0))
            for name in names
        )

    def show_error(self, text: str) -> None:
        self.query_one("#dashboard-error", Static).update(Text(text))

    # -- actions ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The admin screen exists only for accounts whose ``welcome`` said ``admin``."""
        return self.client.is_admin if action == "admin" else True

    def action_admin(self) -> None:
        self.app.open_admin()  # type: ignore[attr-defined]

    def action_focus_create(self) -> None:
        self.set_focus(self.query_one("#create-name", Input))

    def action_focus_join(self) -> None:
        self.set_focus(self.query_one("#join-name", Input))

    def action_focus_rooms(self) -> None:
        self.set_focus(self.query_one(RoomList))

    def action_enter(self) -> None:
        """Enter in a name field takes the name and empties the field now, in the key's turn.

        Keys typed while the server answers then land in an empty field instead
        of being glued to the name (see ``clubroom_tui.keys``); a name that fails
        is put back in front of them.
        """
        for field_id, create in (("create-name", True), ("join-name", False)):
            if self.focused is self.query_one(f"#{field_id}", Input):
                self._take_name(field_id, create)
                return
        raise SkipAction  # buttons and the room list answer Enter themselves

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self._take_name("create-name", create=True)

    @on(Button.Pressed, "#join")
    def _join(self) -> None:
        self._take_name("join-name", create=False)

    def _take_name(self, field_id: str, create: bool) -> None:
        field = self.query_one(f"#{field_id}", Input)
        name, problem = clean_room_name(field.value)
        if problem:
            self.show_error(problem)
            return
        field.value = ""
        self.show_error("Creating the room…" if create else "Joining the room…")
        self.enter_room(name, create, field_id)

    @on(RoomList.Opened)
    def _open(self, event: RoomList.Opened) -> None:
        self.show_error("")
        self.post_message(self.RoomChosen(event.room))

    @on(Button.Pressed, "#logout")
    def _logout_pressed(self) -> None:
        self.action_log_out()

    def action_log_out(self) -> None:
        """Log out, after saying which rooms that deletes (if any) and hearing yes."""
        doomed = rooms_deleted_by_leaving(self.client)
        if not doomed:
            self.log_out()
            return
        question = (
            "Log out? You are the last member of "
            + describe_rooms(doomed)
            + (
                ", so logging out deletes it for good."
                if len(doomed) == 1
                else ", so logging out deletes them for good."
            )
        )
        self.app.push_screen(Confirm(question, "Log out and delete"), self._log_out_confirmed)

    def _log_out_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.log_out()

    # -- network work ------------------------------------------------------------

    @work(group="rooms")
    async def enter_room(self, name: str, create: bool, field_id: str) -> None:
        try:
            if create:
                joined = await self.client.create_room(name)
            else:
                joined = await self.client.join_room(name)
        except ClientError as exc:
            self._entry_failed(name, field_id, exc)
            return
        self.show_error("")
        self.post_message(self.RoomChosen(joined.room))

    def _entry_failed(self, name: str, field_id: str, exc: ClientError) -> None:
        """Say why, and put the name back (ahead of anything typed since)."""
        exists = isinstance(exc, RequestFailed) and exc.code is ErrorCode.ROOM_EXISTS
        target = self.query_one("#join-name" if exists else f"#{field_id}", Input)
        typed_since = target.value
        target.value = f"{name}{typed_since}" if not exists else name
        target.cursor_position = len(name)
        if exists:
            self.set_focus(target)
            self.show_error(
                f"A room called “{printable(name)}” already exists. Press Enter to join it instead."
            )
        else:
            self.show_error(str(exc))

    @work(exclusive=True, group="logout")
    async def log_out(self) -> None:
        try:
            await self.client.logout()
        except ClientError:
            self.client.forget_session()  # unreachable: at least stop using the token here
        self.post_message(self.LoggedOut())


def clean_room_name(typed: str) -> tuple[str, str]:
    """The name to ask the server for (a leading ``#`` dropped), or a problem to show.

    The dashboard shows rooms as ``# name``, so typing ``#general`` means
    ``general``. Names are not cut at the limit as one types: a long one is
    refused with its length, so nothing is lost silently.
    """
    name = typed.strip()
    if name.startswith("#"):
        name = name[1:].strip()
    if not name:
        return "", "Type a room name first."
    if len(name) > MAX_ROOM_NAME_LENGTH:
        over = len(name) - MAX_ROOM_NAME_LENGTH
        return "", (
            f"That name is {len(name)} characters; room names are at most "
            f"{MAX_ROOM_NAME_LENGTH}. Remove {over}."
        )
    return name, ""
