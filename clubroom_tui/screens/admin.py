"""The admin screen: every room and account on the server, and the operator's few actions.

Only offered to accounts whose ``welcome`` said ``admin`` (the server checks
the role again at every request, so a revoked role shows up here as a clear
``forbidden`` message, never a crash). Deleting a room and disabling an
account destroy something, so each asks first with a sentence naming what
goes — fetched fresh just before asking, so the counts are the server's
current ones. Names come from other users and are only ever shown as plain
text (``clubroom_tui.plain``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from clubroom_tui.client import ClientError, ClubroomClient, RequestFailed
from clubroom_tui.plain import plain, printable
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import (
    AdminRoomInfo,
    AdminUserInfo,
    ErrorCode,
    direct_room_users,
    is_private_room,
    room_key,
    username_key,
)

# How the room table can be ordered ("s" on the table cycles through them).
ROOM_ORDERS: dict[str, Callable[[AdminRoomInfo], tuple[object, ...]]] = {
    "name": lambda r: (r.room.casefold(),),
    "members": lambda r: (-r.members, r.room.casefold()),
    "messages": lambda r: (-r.messages, r.room.casefold()),
}
ROOM_COLUMNS = ("Room", "Kind", "Members", "Messages")
USER_COLUMNS = ("User", "Status", "Role", "Devices")


def room_kind(name: str) -> str:
    """Public, private (``~owner/name``) or direct (a two-person room), from the name alone."""
    if direct_room_users(name) is not None:
        return "direct"
    return "private" if is_private_room(name) else "public"


def counted(count: int, noun: str) -> str:
    """``1 message``, ``1,234 messages``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def delete_room_question(room: AdminRoomInfo) -> str:
    """What deleting this room destroys, in one sentence the confirmation shows."""
    members = (
        "Nobody is in it now."
        if room.members == 0
        else f"Its {counted(room.members, 'member')} will be removed from it."
    )
    return (
        f"Delete room “{printable(room.room)}” and its {counted(room.messages, 'message')} "
        f"for everyone? {members} This cannot be undone."
    )


def disable_user_question(user: AdminUserInfo, me: str | None) -> str:
    """What disabling this account does, in one sentence the confirmation shows."""
    name = printable(user.username)
    devices = (
        f"is logged out on {counted(user.sessions, 'device')} at once"
        if user.sessions
        else "is logged out everywhere"
    )
    yourself = (
        " That is you: you are logged out here too, and only another administrator "
        "or the operator can let you back in."
        if me is not None and username_key(me) == username_key(user.username)
        else ""
    )
    return (
        f"Disable the account “{name}”? It {devices} and cannot log in until an administrator "
        f"enables it again; its messages stay.{yourself}"
    )


@dataclass
class _Listing:
    """What the server last said, and how the user wants it shown."""

    rooms: list[AdminRoomInfo]
    users: list[AdminUserInfo]
    more_users: bool = False
    room_filter: str = ""
    room_order: str = "name"


class RoomTable(DataTable[Text]):
    """All rooms; Delete asks to delete the highlighted one, ``s`` changes the order."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("delete", "screen.delete_room", "Delete room"),
        Binding("s", "screen.sort_rooms", "Sort"),
    ]


class UserTable(DataTable[Text]):
    """The accounts found; Delete asks to disable the highlighted one, ``e`` enables it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("delete", "screen.disable_user", "Disable user"),
        Binding("e", "screen.enable_user", "Enable user"),
    ]


class AdminScreen(Screen[None]):
    """Rooms with their members and messages, accounts with their status; act after a yes."""

    DEFAULT_CSS = """
    #admin { padding: 0 1; }
    #admin Label { margin-top: 1; text-style: bold; }
    .admin-bar { height: auto; }
    .admin-bar Input { width: 1fr; }
    .admin-bar Button { margin-left: 1; }
    #admin-rooms, #admin-users { height: 1fr; min-height: 4; }
    .admin-status { height: auto; min-height: 1; color: $clubroom-muted; }
    .admin-status.error { color: $clubroom-error; }
    """
    AUTO_FOCUS = "#admin-rooms"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self, client: ClubroomClient) -> None:
        super().__init__()
        self.client = client
        self.listing = _Listing(rooms=[], users=[])

    def compose(self) -> ComposeResult:
        yield StatusBar("Admin", user=self.client.username or "")
        with Vertical(id="admin"):
            yield Label("Rooms (Delete: delete the highlighted room · s: sort)")
            with Horizontal(classes="admin-bar"):
                yield Input(placeholder="Filter rooms by name", id="admin-room-filter")
                yield Button("Delete room…", id="admin-delete-room", variant="error")
            yield RoomTable(id="admin-rooms", cursor_type="row", zebra_stripes=True)
            yield Static(id="admin-rooms-status", classes="admin-status")
            yield Label("Users (Delete: disable · e: enable the highlighted user)")
            with Horizontal(classes="admin-bar"):
                yield Input(placeholder="Find users by name (Enter)", id="admin-user-query")
                yield Button("Disable user…", id="admin-disable-user", variant="error")
                yield Button("Enable user", id="admin-enable-user")
            yield UserTable(id="admin-users", cursor_type="row", zebra_stripes=True)
            yield Static(id="admin-users-status", classes="admin-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RoomTable).add_columns(*ROOM_COLUMNS)
        self.query_one(UserTable).add_columns(*USER_COLUMNS)
        self.action_refresh()

    # -- showing -------------------------------------------------------------------

    def _status(self, which: str, text: str, *, error: bool = False) -> None:
        status = self.query_one(f"#admin-{which}-status", Static)
        status.set_class(error, "error")
        status.update(Text(text))

    def shown_rooms(self) -> list[AdminRoomInfo]:
        """The rooms the filter lets through, in the chosen order."""
        wanted = self.listing.room_filter.strip().casefold()
        rooms = [r for r in self.listing.rooms if wanted in r.room.casefold()]
        return sorted(rooms, key=ROOM_ORDERS[self.listing.room_order])

    def _show_rooms(self) -> None:
        rooms = self.shown_rooms()
        _fill(
            self.query_one(RoomTable),
            ((r.room, _room_cells(r)) for r in rooms),
        )
        total = len(self.listing.rooms)
        shown = "" if len(rooms) == total else f", {len(rooms):,} shown"
        self._status(
            "rooms",
            f"{counted(total, 'room')}{shown} · sorted by {self.listing.room_order}",
        )

    def _show_users(self) -> None:
        users = self.listing.users
        _fill(self.query_one(UserTable), ((u.username, _user_cells(u)) for u in users))
        more = " (more match: narrow the search)" if self.listing.more_users else ""
        self._status("users", f"{counted(len(users), 'user')} found{more}")

    def _highlighted(self, table: DataTable[Text]) -> str | None:
        """The row key (room or username) under the table's cursor, if any."""
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    # -- keys and buttons ----------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_refresh(self) -> None:
        self.load_rooms()
        self.load_users(self.query_one("#admin-user-query", Input).value)

    def action_sort_rooms(self) -> None:
        orders = list(ROOM_ORDERS)
        self.listing.room_order = orders[(orders.index(self.listing.room_order) + 1) % len(orders)]
        self._show_rooms()

    @on(DataTable.HeaderSelected, "#admin-rooms")
    def _sort_by_header(self, event: DataTable.HeaderSelected) -> None:
        column = {"room": "name"}.get(str(event.label).casefold(), str(event.label).casefold())
        if column in ROOM_ORDERS:
            self.listing.room_order = column
            self._show_rooms()

    @on(Input.Changed, "#admin-room-filter")
    def _filter_rooms(self, event: Input.Changed) -> None:
        self.listing.room_filter = event.value
        self._show_rooms()

    @on(Input.Submitted, "#admin-room-filter")
    def _to_rooms(self) -> None:
        self.set_focus(self.query_one(RoomTable))

    @on(Input.Submitted, "#admin-user-query")
    def _find_users(self, event: Input.Submitted) -> None:
        self.load_users(event.value)
        self.set_focus(self.query_one(UserTable))  # where Delete and e act on what was found

    @on(Button.Pressed, "#admin-delete-room")
    def action_delete_room(self) -> None:
        room = self._highlighted(self.query_one(RoomTable))
        if room is None:
            self._status("rooms", "No room to delete: none is listed.", error=True)
            return
        self.ask_to_delete(room)

    @on(Button.Pressed, "#admin-disable-user")
    def action_disable_user(self) -> None:
        user = self._chosen_user()
        if user is None:
            return
        if user.status == "disabled":
            self._status("users", f"“{printable(user.username)}” is already disabled.")
            return
        question = disable_user_question(user, self.client.username)
        self.app.push_screen(
            Confirm(question, "Disable account"),
            lambda yes: self.disable_user(user.username) if yes else self._kept("users"),
        )

    @on(Button.Pressed, "#admin-enable-user")
    def action_enable_user(self) -> None:
        user = self._chosen_user()
        if user is None:
            return
        if user.status == "active":
            self._status("users", f"“{printable(user.username)}” is not disabled.")
            return
        self.enable_user(user.username)

    def _chosen_user(self) -> AdminUserInfo | None:
        name = self._highlighted(self.query_one(UserTable))
        user = next((u for u in self.listing.users if u.username == name), None)
        if user is None:
            self._status("users", "No user chosen: find one first.", error=True)
        return user

    def _kept(self, which: str) -> None:
        self._status(which, "Cancelled: nothing was changed.")

    # -- network work --------------------------------------------------------------

    @work(exclusive=True, group="admin-rooms")
    async def load_rooms(self) -> None:
        try:
            self.listing.rooms = await self.client.admin_rooms()
        except ClientError as exc:
            self._status("rooms", f"Could not list the rooms: {exc}", error=True)
            return
        self._show_rooms()

    @work(exclusive=True, group="admin-users")
    async def load_users(self, query: str) -> None:
        try:
            found = await self.client.admin_users(query.strip())
        except ClientError as exc:
            self._status("users", f"Could not list the users: {exc}", error=True)
            return
        self.listing.users, self.listing.more_users = found.users, found.more
        self._show_users()

    @work(exclusive=True, group="admin-ask")
    async def ask_to_delete(self, name: str) -> None:
        """Fetch the room's counts now, so the question names what is really lost.

        Exclusive: a second Delete while the counts are on their way asks once, not twice.
        """
        try:
            self.listing.rooms = await self.client.admin_rooms()
        except ClientError as exc:
            self._status("rooms", f"Could not delete “{printable(name)}”: {exc}", error=True)
            return
        self._show_rooms()
        room = next((r for r in self.listing.rooms if room_key(r.room) == room_key(name)), None)
        if room is None:
            self._status("rooms", f"“{printable(name)}” is already gone.", error=True)
            return
        self.app.push_screen(
            Confirm(delete_room_question(room), "Delete room"),
            lambda yes: self.delete_room(room.room) if yes else self._kept("rooms"),
        )

    @work(group="admin-actions")
    async def delete_room(self, name: str) -> None:
        try:
            await self.client.admin_delete_room(name)
        except RequestFailed as exc:
            gone = exc.code is ErrorCode.NO_SUCH_ROOM
            why = "it was already gone" if gone else exc.message
            self._status("rooms", f"Could not delete “{printable(name)}”: {why}", error=True)
        except ClientError as exc:
            self._status("rooms", f"Could not delete “{printable(name)}”: {exc}", error=True)
        else:
            self.notify(f"Deleted the room “{printable(name)}”.", markup=False)
        self.load_rooms()

    @work(group="admin-actions")
    async def disable_user(self, username: str) -> None:
        await self._change_user(username, self.client.admin_disable_user, "Disabled")

    @work(group="admin-actions")
    async def enable_user(self, username: str) -> None:
        await self._change_user(username, self.client.admin_enable_user, "Enabled")

    async def _change_user(
        self, username: str, change: Callable[[str], Awaitable[None]], done: str
    ) -> None:
        name = printable(username)
        try:
            await change(username)
        except ClientError as exc:
            self._status("users", f"Could not change “{name}”: {exc}", error=True)
            return
        self.notify(f"{done} the account “{name}”.", markup=False)
        if self.is_attached and self.client.token:  # disabling yourself logs you out
            self.action_refresh()  # a disabled user also left their rooms


def _room_cells(room: AdminRoomInfo) -> tuple[Text, ...]:
    return (
        plain(room.room),
        Text(room_kind(room.room)),
        Text(f"{room.members:,}", justify="right"),
        Text(f"{room.messages:,}", justify="right"),
    )


def _user_cells(user: AdminUserInfo) -> tuple[Text, ...]:
    return (
        plain(user.username),
        Text(user.status, style="bold" if user.status == "disabled" else ""),
        Text("admin" if user.admin else ""),
        Text(f"{user.sessions:,}", justify="right"),
    )


def _fill(table: DataTable[Text], rows: Iterable[tuple[str, tuple[Text, ...]]]) -> None:
    """Replace the rows, keeping the cursor on the same key where it still exists."""
    before = None
    if table.row_count:
        before = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if before is not None and before in {k.value for k in table.rows}:
        table.move_cursor(row=table.get_row_index(before))
