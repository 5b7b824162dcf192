"""The Textual app: owns the injected client, relays its events, and moves between screens."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

from textual import work
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen

from clubroom_tui.client import (
    SERVER_RESTARTING,
    ClientError,
    ClubroomClient,
    ConnectionState,
    EventStream,
    InvitedTo,
    MembersChanged,
    Mentioned,
    MessagesAdded,
    ReadMoved,
    RoomLost,
    SessionEnded,
    StateChanged,
)
from clubroom_tui.doomed import describe_rooms, rooms_deleted_by_leaving
from clubroom_tui.drafts import Draft
from clubroom_tui.keys import InOrderKeys
from clubroom_tui.news import ClientNews
from clubroom_tui.plain import printable
from clubroom_tui.readable import readable_variables
from clubroom_tui.screens.admin import AdminScreen
from clubroom_tui.screens.confirm import Confirm
from clubroom_tui.screens.dashboard import DashboardScreen
from clubroom_tui.screens.login import LoginScreen
from clubroom_tui.screens.room import RoomScreen
from clubroom_tui.sessions import SavedSession, SessionStore
from clubroom_tui.widgets.message_log import Notice
from protocol import room_key

MAX_KEPT_NOTICES = 200
# How often the dashboard asks the server for your rooms and their counts: a
# room joined on another device, and messages in rooms not joined here, show
# within this time (rooms joined here count live).
ROOMS_REFRESH_SECONDS = 15.0


class ClubroomApp(InOrderKeys):
    """Login → dashboard → rooms, over one long-lived ``ClubroomClient``."""

    CSS_PATH = "clubroom.tcss"
    TITLE = "Clubroom"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f6", "next_mention", "Next mention"),
    ]

    connection_state: reactive[ConnectionState] = reactive(ConnectionState.CONNECTING)
    connection_detail: reactive[str] = reactive("")

    def __init__(
        self,
        client: ClubroomClient,
        sessions: SessionStore | None = None,
        *,
        bell_on_mention: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.sessions = sessions
        self.bell_on_mention = bell_on_mention
        self.unread: dict[str, int] = {}
        self.mentions: dict[str, int] = {}  # unread mentions per room key
        # The rooms the server counts us in (room key → name), on any device:
        # ``my_rooms`` lists them; this connection may not have joined them yet.
        self.memberships: dict[str, str] = {}
        self.notices: dict[str, list[Notice]] = {}  # per room, for when it is shown again
        self.drafts: dict[str, Draft] = {}  # per room: unsent text and the last line sent
        self.remember = False
        self.rooms_refresh_seconds = ROOMS_REFRESH_SECONDS
        self._events: EventStream | None = None

    def get_css_variables(self) -> dict[str, str]:
        """The theme's variables plus readable ``$clubroom-*`` text colours (see readable.py)."""
        return readable_variables(super().get_css_variables())

    async def on_mount(self) -> None:
        self._events = self.client.subscribe()
        self.relay_client_events(self._events)
        await self.client.start()
        saved = self.sessions.load(self.client.url) if self.sessions else None
        await self.push_screen(self._login_screen(saved=saved))

    @work(group="client-events")
    async def relay_client_events(self, events: EventStream) -> None:
        """Turn client events into Textual messages, in order, for as long as the app runs."""
        async for event in events:
            self.post_message(ClientNews(event))

    async def action_quit(self) -> None:
        """Quit; if that could delete rooms (after the grace period), say which and ask first."""
        if isinstance(self.screen, Confirm):
            return  # already asking
        doomed = rooms_deleted_by_leaving(self.client) if self.client.token else []
        if not doomed:
            await self._close_and_exit()
            return
        question = (
            "Quit? You are the last member of "
            + describe_rooms(doomed)
            + ". If you stay away longer than the server's grace period (30 s by default), "
            + ("it is" if len(doomed) == 1 else "they are")
            + " deleted for good."
        )
        self.push_screen(Confirm(question, "Quit anyway"), self._quit_answered)

    async def _quit_answered(self, yes: bool | None) -> None:
        if yes:
            await self._close_and_exit()

    async def _close_and_exit(self) -> None:
        """Close the connection properly, then exit."""
        await self.client.close()
        self.exit()

    # -- news from the connection ------------------------------------------------

    def on_client_news(self, news: ClientNews) -> None:
        event = news.event
        if isinstance(event, StateChanged):
            self.connection_state = event.state
            self.connection_detail = event.detail
            if event.detail == SERVER_RESTARTING:
                self.notify(f"{SERVER_RESTARTING} Unsent messages are kept.", markup=False)
        elif isinstance(event, MessagesAdded):
            self._count_unread(event)
        elif isinstance(event, MembersChanged):
            self._keep_notice(event)
        elif isinstance(event, Mentioned):
            self._mentioned(event)
        elif isinstance(event, ReadMoved):
            self._read_elsewhere(event)
        elif isinstance(event, InvitedTo):
            self.notify(f"{event.by} invited you to {event.room}.", markup=False)
        elif isinstance(event, RoomLost):
            self._forget_room(event.room)
            self._save_session()
            self.notify(
                f"You are no longer in {event.room}: {event.reason}",
                severity="warning",
                markup=False,
            )
        elif isinstance(event, SessionEnded):
            self._forget_session()
            self._show_login(f"You were logged out: {event.reason}")
            return
        for screen in self.screen_stack:  # also under a modal, such as the command palette
            screen.post_message(ClientNews(event))

    def _main_screen(self) -> Screen:
        """The screen the user is on, looking past modals such as the command palette."""
        for screen in reversed(self.screen_stack):
            if not isinstance(screen, ModalScreen):
                return screen
        return self.screen

    def _count_unread(self, event: MessagesAdded) -> None:
        """Count others' messages the reader does not see arrive (elsewhere, or scrolled up)."""
        key = room_key(event.room)
        if event.snapshot or self._reading_live(event.room):
            return
        me = (self.client.username or "").lower()
        fresh = sum(1 for m in event.messages if m.author.lower() != me)
        self.unread[key] = self.unread.get(key, 0) + fresh

    # -- badges and mentions (issue 15) -----------------------------------------

    def _viewing(self, room: str) -> bool:
        main = self._main_screen()
        return isinstance(main, RoomScreen) and main.key == room_key(room)

    def _reading_live(self, room: str) -> bool:
        """Is the room on screen with its newest message in view (so what arrives is seen)?

        A reader scrolled up, or still above the "new messages" divider, does
        not see what arrives: it counts as unread until they reach the bottom.
        """
        main = self._main_screen()
        return isinstance(main, RoomScreen) and main.key == room_key(room) and main.reading_live

    def _mentioned(self, event: Mentioned) -> None:
        """Ring (if wanted); a mention elsewhere also counts on the dashboard and pops up."""
        if self.bell_on_mention:
            self.bell()
        if self._reading_live(event.room):
            return
        key = room_key(event.room)
        self.mentions[key] = self.mentions.get(key, 0) + 1
        if self._viewing(event.room):
            return  # in this room, scrolled up: the log says what is below
        self.notify(
            f"{event.author} mentioned you in {event.room} (F6 jumps there).",
            title="Mention",
            markup=False,
        )

    def _read_elsewhere(self, event: ReadMoved) -> None:
        """Read on another device up to the newest message: the badges go."""
        state = self.client.rooms.get(room_key(event.room))
        if state is not None and (state.last_id is None or event.up_to >= state.last_id):
            self.unread[room_key(event.room)] = 0
            self.mentions[room_key(event.room)] = 0

    def room_read(self, room: str) -> None:
        """The user saw the bottom of the room: no more badges for it."""
        self.unread[room_key(room)] = 0
        self.mentions[room_key(room)] = 0

    @work(group="badges", exclusive=True)
    async def load_badges(self) -> None:
        """Take the server's unread and mention counts (right across restarts and devices)."""
        try:
            listed = await self.client.my_rooms()
        except ClientError:
            return  # the counts of this session still show; nothing is lost
        self.memberships.clear()
        for entry in listed.rooms:
            key = room_key(entry.room)
            self.memberships[key] = entry.room
            if not self._viewing(entry.room):
                self.unread[key], self.mentions[key] = entry.unread, entry.mentions
        for invitation in listed.invitations:
            self.notify(f"{invitation.by} invited you to {invitation.room}.", markup=False)
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                screen.refresh_rooms()

    def your_rooms(self) -> list[str]:
        """The rooms you are in, by name: joined here, or (the server says) on another device."""
        names = {key: state.name for key, state in self.client.rooms.items()}
        for key, name in self.memberships.items():
            names.setdefault(key, name)
        return sorted(names.values(), key=str.casefold)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """F6 (next mention) means nothing before logging in: not offered on the login form."""
        if action == "next_mention":
            return self.client.token is not None
        return True

    def action_next_mention(self) -> None:
        """Open the next room (in name order) with unread mentions."""
        waiting = [name for name in self.your_rooms() if self.mentions.get(room_key(name), 0)]
        if not waiting:
            self.notify("No unread mentions.", markup=False)
            return
        main = self._main_screen()
        current = main.room if isinstance(main, RoomScreen) else None
        later = [
            name for name in waiting if current is None or name.casefold() > current.casefold()
        ]
        self.show_room((later or waiting)[0])

    def show_room(self, room: str) -> None:
        """Open one of your rooms; join it here first if only another device is in it."""
        if room_key(room) in self.client.rooms:
            self.open_room(room)
        else:
            self.join_and_open(room)

    @work(group="rooms")
    async def join_and_open(self, room: str) -> None:
        try:
            joined = await self.client.join_room(room)
        except ClientError as exc:
            self.notify(f"Could not open {room}: {exc}", severity="warning", markup=False)
            return
        self._save_session()
        self.open_room(joined.room)

    def _keep_notice(self, event: MembersChanged) -> None:
        notice = Notice.member_change(event.joined, event.left)
        if notice is not None:
            kept = self.notices.setdefault(room_key(event.room), [])
            kept.append(notice)
            del kept[:-MAX_KEPT_NOTICES]

    def _forget_room(self, room: str) -> None:
        self.memberships.pop(room_key(room), None)
        self.unread.pop(room_key(room), None)
        self.mentions.pop(room_key(room), None)
        self.notices.pop(room_key(room), None)
        self.drafts.pop(room_key(room), None)

    # -- moving between screens ------------------------------------------------------

    def on_login_screen_logged_in(self, event: LoginScreen.LoggedIn) -> None:
        self.remember = event.remember
        if self.remember:
            self._save_session()
        else:
            self._forget_session()
        notice = rooms_gone_while_away(event.lost_rooms) if event.lost_rooms else ""
        dashboard = DashboardScreen(self.client, self.unread, notice=notice)
        self.switch_screen(dashboard)

    def on_login_screen_saved_session_rejected(self) -> None:
        self._forget_session()

    def on_dashboard_screen_room_chosen(self, event: DashboardScreen.RoomChosen) -> None:
        self._save_session()
        self.show_room(event.room)

    def on_dashboard_screen_logged_out(self) -> None:
        self._forget_session()
        self.memberships.clear()
        self.unread.clear()
        self.mentions.clear()
        self.notices.clear()
        self.drafts.clear()
        self._show_login("You have logged out.")

    def on_room_screen_left(self, event: RoomScreen.Left) -> None:
        self._forget_room(event.room)
        self._save_session()
        if isinstance(self.screen, RoomScreen):
            self.pop_screen()

    def open_room(self, room: str) -> None:
        """Show a room the client is in, from the dashboard or from another room."""
        key = room_key(room)
        notices, draft = self.notices.setdefault(key, []), self.drafts.setdefault(key, Draft())
        screen = RoomScreen(self.client, room, notices, draft)
        if isinstance(self._main_screen(), RoomScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def open_admin(self) -> None:
        """The admin screen, over the dashboard (administrators only; Escape goes back)."""
        if not self.client.is_admin:
            return
        self.back_to_dashboard()
        if not isinstance(self.screen, AdminScreen):
            self.push_screen(AdminScreen(self.client))

    def back_to_dashboard(self) -> None:
        while isinstance(self.screen, RoomScreen):
            self.pop_screen()

    def _show_login(self, notice: str) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(self._login_screen(notice=notice))

    def _login_screen(self, *, saved: SavedSession | None = None, notice: str = "") -> Screen:
        can_remember = self.sessions is not None
        return LoginScreen(self.client, saved=saved, notice=notice, can_remember=can_remember)

    # -- remember me ---------------------------------------------------------------

    def _save_session(self) -> None:
        if not (self.remember and self.sessions and self.client.token):
            return
        rooms = tuple(state.name for state in self.client.rooms.values())
        self.sessions.save(self.client.url, SavedSession(self.client.token, rooms))

    def _forget_session(self) -> None:
        self.remember = False
        if self.sessions:
            self.sessions.forget(self.client.url)

    # -- command palette -------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, DashboardScreen):
            yield SystemCommand("Create room", "Name a new room", screen.action_focus_create)
            yield SystemCommand("Join room", "Name a room to join", screen.action_focus_join)
            yield SystemCommand("Log out", "End this session", screen.action_log_out)
            if self.client.is_admin:
                yield SystemCommand("Admin", "Every room and user on the server", self.open_admin)
        if isinstance(screen, RoomScreen):
            yield SystemCommand("Back to dashboard", "Stay in the room", self.back_to_dashboard)
            yield SystemCommand("Leave room", f"Leave {screen.room} for good", screen.action_leave)
        for name in self.your_rooms():
            open_it = partial(self.show_room, name)
            yield SystemCommand(f"Open {name}", "Show this room", open_it)


def rooms_gone_while_away(rooms: tuple[str, ...]) -> str:
    """Why remembered rooms are missing after a restart, in the user's words."""
    names = ", ".join(f"“{printable(room)}”" for room in rooms)
    which = "was" if len(rooms) == 1 else "were"
    return (
        f"While you were away, {names} {which} deleted: a room is deleted when its last "
        "member leaves, logs out, or stays away longer than the server's grace period."
    )
