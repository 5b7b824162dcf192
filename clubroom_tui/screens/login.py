"""Log in or register; with a remembered session, resume without a password."""

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
from textual.widgets import Button, Checkbox, Footer, Input, Static

from clubroom_tui.client import (
    ClientError,
    ClubroomClient,
    ConnectionLost,
    ConnectionState,
    NotConnected,
    RequestFailed,
    RequestTimeout,
)
from clubroom_tui.sessions import SavedSession
from clubroom_tui.widgets.status_bar import StatusBar
from protocol import PASSWORD_MAX, PASSWORD_RULES, USERNAME_MAX, ErrorCode, password_problem

SESSION_EXPIRED = "Your saved session has expired or was revoked; please log in again."


class LoginScreen(Screen[None]):
    """Username, masked password, "Remember me", and the two ways in."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "log_in", "Log in"),
        Binding("ctrl+r", "register", "Register"),
        # ctrl+j too: keys typed before the app has the terminal (while it starts)
        # arrive with Enter turned into a line feed by the terminal's cooked mode.
        Binding("enter,ctrl+j", "enter", "Next / log in", show=False, priority=True),
    ]

    class LoggedIn(Message):
        """The connection is authenticated as ``username``."""

        def __init__(self, username: str, remember: bool, lost_rooms: tuple[str, ...] = ()) -> None:
            super().__init__()
            self.username = username
            self.remember = remember
            self.lost_rooms = lost_rooms  # remembered rooms the server deleted meanwhile

    class SavedSessionRejected(Message):
        """The remembered token no longer works, so it should be forgotten."""

    def __init__(
        self,
        client: ClubroomClient,
        *,
        saved: SavedSession | None = None,
        notice: str = "",
        can_remember: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.saved = saved
        self.notice = notice
        self.can_remember = can_remember

    def compose(self) -> ComposeResult:
        yield StatusBar("Log in")
        with Vertical(id="login-form"):
            title = Text.assemble(("Welcome to Clubroom", "bold"), (f"  {self.client.url}", "dim"))
            yield Static(title, id="login-title")
            yield Input(placeholder="Username", id="username", max_length=USERNAME_MAX)
            yield Input(
                placeholder="Password", password=True, id="password", max_length=PASSWORD_MAX
            )
            if self.can_remember:
                yield Checkbox("Remember me", value=self.saved is not None, id="remember")
            with Horizontal(id="login-buttons"):
                yield Button("Log in", variant="primary", id="log-in")
                yield Button("Register", id="register")
            yield Static(Text(f"New passwords: {PASSWORD_RULES}."), id="password-rules")
            yield Static(Text(self.notice), id="login-error", classes="error")
            yield Static(id="connection-notice")
        yield Footer()

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#username", Input))
        self.watch(self.app, "connection_detail", self._show_connection)
        if self.saved is not None:
            self.resume_saved(self.saved)

    def _show_connection(self, detail: str) -> None:
        connected = getattr(self.app, "connection_state", None) is ConnectionState.CONNECTED
        notice = self.query_one("#connection-notice", Static)
        notice.update(Text("" if connected else detail))

    def show_error(self, text: str) -> None:
        self.query_one("#login-error", Static).update(Text(text))

    # -- the form ------------------------------------------------------------

    def action_enter(self) -> None:
        """Enter in the username moves to the password; in the password it logs in.

        Both happen now, in the key's turn, so keys typed right after Enter
        already go to the password field (see ``clubroom_tui.keys``).
        """
        focused = self.focused
        if focused is self.query_one("#username", Input):
            self.set_focus(self.query_one("#password", Input))
        elif focused is self.query_one("#password", Input):
            self.action_log_in()
        else:
            raise SkipAction  # buttons and the checkbox answer Enter themselves

    @on(Button.Pressed, "#log-in")
    def action_log_in(self) -> None:
        self._start(register=False)

    @on(Button.Pressed, "#register")
    def action_register(self) -> None:
        self._start(register=True)

    def _start(self, register: bool) -> None:
        """Take the credentials as they are at this keypress, then talk to the server."""
        credentials = self._credentials(register)
        if credentials is not None:
            self.authenticate(register, *credentials)

    def _credentials(self, register: bool) -> tuple[str, str] | None:
        """The typed username and password, or None after saying what is missing."""
        username = self.query_one("#username", Input).value.strip()
        password = self.query_one("#password", Input).value
        if not username:
            self.show_error("Type your username first.")
            return None
        if not password:
            self.show_error("Type your password first.")
            return None
        problem = password_problem(password, username) if register else None
        if problem:
            self.show_error(problem)
            return None
        return username, password

    @work(exclusive=True, group="auth")
    async def authenticate(self, register: bool, username: str, password: str) -> None:
        self.show_error("Creating your account…" if register else "Logging in…")
        action = self.client.register if register else self.client.login
        try:
            welcome = await action(username, password)
        except ClientError as exc:
            self.show_error(str(exc))
            if isinstance(exc, RequestFailed) and exc.code is ErrorCode.INVALID_CREDENTIALS:
                self._forget_password(password)
            return
        self.show_error("")
        remember = self.can_remember and self.query_one("#remember", Checkbox).value
        self.post_message(self.LoggedIn(welcome.username, remember))

    def _forget_password(self, tried: str) -> None:
        """Empty the password field after a wrong one, unless it has been retyped meanwhile."""
        field = self.query_one("#password", Input)
        if field.value == tried:
            field.value = ""

    # -- remember me -----------------------------------------------------------

    @work(exclusive=True, group="auth")
    async def resume_saved(self, saved: SavedSession) -> None:
        """Wait for the server, resume with the saved token and re-join the saved rooms."""
        self.show_error("Resuming your saved session…")
        while True:
            await self.client.wait_ready()
            try:
                welcome = await self.client.resume(saved.token)
            except (NotConnected, ConnectionLost, RequestTimeout):
                continue
            except ClientError:
                self.show_error(SESSION_EXPIRED)
                self.post_message(self.SavedSessionRejected())
                return
            break
        lost = await rejoin(self.client, saved.rooms)
        self.show_error("")
        self.post_message(self.LoggedIn(welcome.username, remember=True, lost_rooms=lost))


async def rejoin(client: ClubroomClient, rooms: tuple[str, ...]) -> tuple[str, ...]:
    """Join the remembered rooms again; return those the server no longer has.

    Other failures (a moment offline) do not count as deleted: the room is
    simply not re-joined now.
    """
    lost: list[str] = []
    for room in rooms:
        try:
            await client.join_room(room)
        except RequestFailed as exc:
            if exc.code is ErrorCode.NO_SUCH_ROOM:
                lost.append(room)
        except ClientError:
            continue
    return tuple(lost)
