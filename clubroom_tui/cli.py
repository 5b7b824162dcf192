"""The ``clubroom`` command: ``clubroom connect [URL]`` opens the terminal client."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import click

from clubroom_tui import scripting
from clubroom_tui.app import ClubroomApp
from clubroom_tui.client import ClubroomClient
from clubroom_tui.scripting import Target
from clubroom_tui.sessions import SessionStore, default_config_dir
from protocol import DEFAULT_URL


@click.group()
def main() -> None:
    """Clubroom: rooms-based, real-time, private-by-default chat in the terminal."""


KEYS_HELP = """
\b
Keys (also listed in the footer; ctrl+p opens the command palette):
  everywhere   ctrl+q quit (asks first if that could delete rooms)
               ctrl+p commands   tab / shift+tab move between fields
  login        enter in username → password; enter in password logs in
               ctrl+l log in   ctrl+r register   space toggles "Remember me"
  dashboard    ctrl+n create room   ctrl+g join room   ctrl+r your rooms
               (arrows + enter open a room)
               ctrl+o log out (asks first if that deletes rooms)
  room         enter sends; ctrl+j (shift+enter, alt+enter where the terminal
               reports them) starts a new line; a paste keeps all its lines
               up in an empty box brings back the last message sent
               tab completes a member's name (al or @al → alice) or a /command
               /help lists the commands (/join /leave /me /topic /kick /ban
               /unban /invite /msg /who /help /quit); //text sends "/text"
               f6 opens the next room where someone mentioned you
               escape back to the dashboard (stay in the room)
               ctrl+t show/hide members   ctrl+end jump to the newest
               pageup/pagedown scroll; scrolling to the top loads older messages
               ctrl+up choose a message (up/down another), then e edit,
               d delete (asks), r react, t or enter reply, c copy, escape back
               ctrl+f or /search WORDS search; enter on a result jumps to it
               leave: the Leave button or ctrl+p "Leave room" (asks first)
Keys apply in the order typed, to the field that had the focus.
"""


CAFILE_OPTION = click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file of the CA that signed the server's certificate (wss:// with a private CA).",
)


@main.command(epilog=KEYS_HELP)
@click.argument("urls", nargs=-1, metavar="[URL]...")
@CAFILE_OPTION
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CLUBROOM_CONFIG_DIR",
    show_envvar=True,
    help=f"Where 'Remember me' keeps its token (file mode 0600). [default: {default_config_dir()}]",
)
@click.option(
    "--no-remember",
    is_flag=True,
    help="Never read or write a saved session (shared machines, `clubroom web`); "
    "hides 'Remember me'.",
)
@click.option(
    "--no-bell",
    is_flag=True,
    envvar="CLUBROOM_NO_BELL",
    show_envvar=True,
    help="Do not ring the terminal bell when someone mentions you.",
)
def connect(
    urls: tuple[str, ...],
    cafile: Path | None,
    config_dir: Path | None,
    no_remember: bool,
    no_bell: bool,
) -> None:
    """Open the chat client on the server at URL (default ws://127.0.0.1:8765).

    URL is ws://HOST:PORT or wss://HOST:PORT. Give the URLs of several nodes
    of a cluster to ride through a node restart: the client starts at a
    random one and moves to the next when one fails. If the server cannot be reached,
    the client says so and keeps retrying; once connected it reconnects by
    itself after an outage, catching up on missed messages and sending what
    you typed meanwhile exactly once.

    Log in or register ("Remember me" skips the password next time), then
    create or join rooms from the dashboard.
    """
    urls = urls or (DEFAULT_URL,)
    contexts = {tls_context(url, cafile) is None for url in urls}
    if len(contexts) > 1:
        raise click.BadParameter("use ws:// for all URLs or wss:// for all", param_hint="URL")
    client = ClubroomClient(list(urls), ssl=tls_context(urls[0], cafile))
    sessions = None if no_remember else SessionStore(config_dir or default_config_dir())
    ClubroomApp(client, sessions, bell_on_mention=not no_bell).run()


def tls_context(url: str, cafile: Path | None) -> ssl.SSLContext | None:
    """Validate the URL and build the TLS context that wss:// needs."""
    scheme = urlparse(url).scheme
    if scheme not in ("ws", "wss"):
        raise click.BadParameter("use a ws:// or wss:// address", param_hint="URL")
    if scheme == "ws":
        if cafile is not None:
            raise click.BadParameter("--cafile only applies to wss:// addresses")
        return None
    return ssl.create_default_context(cafile=str(cafile) if cafile else None)


SCRIPT_OPTIONS = [
    click.option(
        "--server",
        "url",
        default=DEFAULT_URL,
        show_default=True,
        envvar="CLUBROOM_SERVER",
        show_envvar=True,
        help="The server; its session must have been saved by 'clubroom connect' (Remember me).",
    ),
    CAFILE_OPTION,
    click.option(
        "--config-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CLUBROOM_CONFIG_DIR",
        show_envvar=True,
        help="Where the saved session is (as for 'clubroom connect').",
    ),
    click.option(
        "--timeout",
        default=10.0,
        show_default=True,
        type=click.FloatRange(0.1, 3600),
        help="Seconds to wait for the server before giving up (exit 4).",
    ),
]


def script_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(SCRIPT_OPTIONS):
        command = option(command)
    return command


def script_target(url: str, cafile: Path | None, config_dir: Path | None, timeout: float) -> Target:
    return Target(url, config_dir or default_config_dir(), timeout, tls_context(url, cafile))


@main.command(epilog=scripting.__doc__.split("\n\n", 1)[1] if scripting.__doc__ else None)
@click.argument("room")
@click.argument("text", required=False)
@script_options
def send(
    room: str,
    text: str | None,
    url: str,
    cafile: Path | None,
    config_dir: Path | None,
    timeout: float,
) -> None:
    """Send TEXT (or, without it or with '-', all of stdin) to ROOM, then exit.

    Joins ROOM as the saved session's user (the others see you join and,
    after the server's grace period, leave). The message is sent exactly
    once, even if the connection drops meanwhile.
    """
    target = script_target(url, cafile, config_dir, timeout)
    try:
        message = scripting.read_text(text, sys.stdin)
    except scripting.ScriptExit as stop:
        click.echo(f"clubroom: {stop.message}", err=True)
        sys.exit(stop.code)
    sys.exit(scripting.run(scripting.sender(room, message), target))


@main.command(epilog=scripting.__doc__.split("\n\n", 1)[1] if scripting.__doc__ else None)
@click.argument("room")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, per event.")
@script_options
def tail(
    room: str,
    as_json: bool,
    url: str,
    cafile: Path | None,
    config_dir: Path | None,
    timeout: float,
) -> None:
    """Print ROOM's latest messages, then every new one, until Ctrl-C.

    Lines are terminal-safe text (control characters shown as symbols), or
    with --json one object per event: {"type": "message", "room", "id",
    "author", "text", "at"}, "member_joined"/"member_left" with "username",
    "topic" with "topic" and "by".
    """
    target = script_target(url, cafile, config_dir, timeout)
    sys.exit(scripting.run(scripting.tailer(room, as_json, sys.stdout), target))


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="CLUBROOM_WEB_HOST",
    show_envvar=True,
    help="Address the web page is served on.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="CLUBROOM_WEB_PORT",
    show_envvar=True,
    help="HTTP port of the web page.",
)
@click.option(
    "--server",
    "server_url",
    default=DEFAULT_URL,
    show_default=True,
    envvar="CLUBROOM_SERVER",
    show_envvar=True,
    help="The Clubroom server the browser sessions connect to.",
)
@CAFILE_OPTION
@click.option(
    "--public-url",
    envvar="CLUBROOM_WEB_PUBLIC_URL",
    show_envvar=True,
    help="The address browsers use, when behind a reverse proxy (e.g. https://chat.example).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    envvar="CLUBROOM_WEB_TRUSTED_PROXY",
    show_envvar=True,
    help="A reverse proxy in front of this page whose X-Forwarded-For is believed "
    "(address or network; repeatable).",
)
def web(
    host: str,
    port: int,
    server_url: str,
    cafile: Path | None,
    public_url: str | None,
    trusted_proxies: tuple[str, ...],
) -> None:
    """Serve the same client to web browsers (one client session per browser tab).

    Open the printed http:// address. Each tab runs its own client, which
    never stores a token ("Remember me" is off), so visitors share nothing.
    Binds to 127.0.0.1 by default; to expose it, put it behind a TLS reverse
    proxy and pass --public-url.
    """
    tls_context(server_url, cafile)  # validates the URL and the CA file
    from clubroom_tui.web import build_web_server  # textual-serve only when serving

    try:
        web_server = build_web_server(
            host,
            port,
            server_url,
            public_url=public_url,
            cafile=str(cafile) if cafile else None,
            trusted_proxies=trusted_proxies,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
    shown = public_url or f"http://{host}:{port}"
    click.echo(f"Clubroom web client on {shown} (server {server_url})")
    web_server.serve()
