"""The admin commands: ``users``, ``rooms``, ``sessions``, ``backup`` and ``check``.

They work on the database directly (``--db`` as for ``serve``, or the
``db`` key of ``--config``), with or without a server running; a running
server applies each change to its connections within a second (see
``manage/live.py``). Lists print as aligned text, or as JSON with
``--json`` for scripts. Nothing destructive happens without a confirmation
that says what will be lost (``--yes`` answers it in scripts).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import argon2
import click

import protocol
from clubroom_server import configfile, logs
from clubroom_server.config import ARGON2_PROFILES, DEFAULT_ARGON2_PROFILE, default_db
from clubroom_server.store import StartupError, StoreError, describe_url, sqlite_path
from clubroom_server.store.admin import (
    AdminStore,
    CheckReport,
    RoomSummary,
    UserSummary,
    backup_sqlite,
    open_admin_store,
)

T = TypeVar("T")
Work = Callable[[AdminStore], Awaitable[T]]
_CONFIG_KEYS = ("db", "argon2_profile")  # what the admin commands take from a serve config


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Take ``db`` (and the hashing cost) from the server's own config file."""
    if value is None:
        return
    from clubroom_server.cli import serve  # the file's keys are serve's options

    values = configfile.load(value, serve.params)
    picked = {key: values[key] for key in _CONFIG_KEYS if key in values}
    ctx.default_map = {**(ctx.default_map or {}), **picked}


def database_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--config``, exactly as ``serve`` reads them."""
    fn = click.option(
        "--db",
        "db",
        envvar="CLUBROOM_DB",
        show_envvar=True,
        help="The database: a SQLite file, sqlite:///path or postgresql://user@host:port/db "
        "[default: the user data directory, clubroom/clubroom.db].",
    )(fn)
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="CLUBROOM_CONFIG",
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="The server's TOML config file (its db is used).",
    )(fn)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def run(db: str | None, work: Work[T]) -> T:
    """Open the admin view of the database, do ``work``, close; errors become one sentence."""

    async def main() -> T:
        store = await open_admin_store(db or default_db())
        try:
            await store.require_admin_schema()
            return await work(store)
        finally:
            await store.close()

    logs.configure("WARNING")
    try:
        return asyncio.run(main())
    except StoreError as exc:  # StartupError included: already one sentence
        raise click.ClickException(str(exc)) from None


# -------------------------------------------------------------------- users


@click.group("users")
def users() -> None:
    """List and administer accounts."""


@users.command("list")
@database_options
@json_option
def users_list(db: str | None, as_json: bool) -> None:
    """Every account: status, admin role, open sessions, creation time."""
    found = run(db, lambda store: store.users())
    if as_json:
        click.echo(json.dumps([_user_json(user) for user in found], indent=2))
        return
    rows = [
        (u.username, u.status, "admin" if u.admin else "", str(u.sessions), _when(u.created_ms))
        for u in found
    ]
    _table(("USER", "STATUS", "ROLE", "SESSIONS", "CREATED"), rows)


@users.command("show")
@click.argument("username")
@database_options
@json_option
def users_show(username: str, db: str | None, as_json: bool) -> None:
    """One account in detail (never its password hash)."""

    async def show(store: AdminStore) -> dict[str, Any]:
        details = await store.user_details(await _user(store, username))
        return {
            **_user_json(details.summary),
            "messages": details.messages,
            "last_message_at": _iso(details.last_message_ms),
        }

    info = run(db, show)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key.replace('_', ' ') + ':':<17} {_plain(value)}")


def _user_action(
    name: str, action: Callable[[AdminStore, UserSummary], Awaitable[str]], help_text: str
) -> None:
    """A ``users NAME`` subcommand that does ``action`` and prints its sentence."""

    @users.command(name, help=help_text)
    @click.argument("username")
    @database_options
    def command(username: str, db: str | None) -> None:
        async def work(store: AdminStore) -> str:
            return await action(store, await _user(store, username))

        click.echo(run(db, work))


async def _disable(store: AdminStore, user: UserSummary) -> str:
    if user.status == "deleted":
        raise click.ClickException(f"{user.username} is deleted; there is nothing to disable.")
    changed = await store.disable_user(user.id)
    state = "is now disabled" if changed else "was already disabled"
    return (
        f"{user.username} {state}: they cannot log in, their sessions are ended, and running "
        "servers close their connections within a second."
    )


async def _enable(store: AdminStore, user: UserSummary) -> str:
    if user.status == "deleted":
        raise click.ClickException(f"{user.username} is deleted; a deleted account cannot return.")
    changed = await store.enable_user(user.id)
    if not changed:
        return f"{user.username} was not disabled; nothing changed."
    return f"{user.username} is enabled again: they can log in with their password."


async def _grant(store: AdminStore, user: UserSummary) -> str:
    if user.status == "deleted":
        raise click.ClickException(f"{user.username} is deleted; it cannot be an admin.")
    changed = await store.set_admin(user.id, True)
    return f"{user.username} {'is now' if changed else 'already was'} an admin."


async def _revoke(store: AdminStore, user: UserSummary) -> str:
    changed = await store.set_admin(user.id, False)
    return f"{user.username} {'is no longer' if changed else 'was not'} an admin."


_user_action("disable", _disable, "Lock an account out and close its connections at once.")
_user_action("enable", _enable, "Let a disabled account log in again.")
_user_action("grant-admin", _grant, "Give an account the admin role.")
_user_action("revoke-admin", _revoke, "Take the admin role away.")


@users.command("reset-password")
@click.argument("username")
@database_options
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from the first line of stdin instead of prompting.",
)
@click.option(
    "--argon2-profile",
    type=click.Choice(sorted(ARGON2_PROFILES)),
    default=DEFAULT_ARGON2_PROFILE,
    envvar="CLUBROOM_ARGON2_PROFILE",
    show_default=True,
    help="Password hashing cost (as for serve).",
)
def users_reset_password(
    username: str, db: str | None, password_stdin: bool, argon2_profile: str
) -> None:
    """Set a new password and end every session of the account."""
    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def reset(store: AdminStore) -> str:
        user = await _user(store, username)
        if user.status == "deleted":
            raise click.ClickException(f"{user.username} is deleted; it has no password to reset.")
        problem = protocol.password_problem(password, user.username)
        if problem:
            raise click.ClickException(problem)
        hasher = argon2.PasswordHasher.from_parameters(ARGON2_PROFILES[argon2_profile])
        await store.set_password_hash(user.id, await asyncio.to_thread(hasher.hash, password))
        still = " (the account stays disabled)" if user.status == "disabled" else ""
        return f"{user.username} has a new password{still}; every session of theirs ended."

    click.echo(run(db, reset))


@users.command("delete")
@click.argument("username")
@database_options
@yes_option
def users_delete(username: str, db: str | None, yes: bool) -> None:
    """Delete an account for good: it can never log in again.

    Its messages stay in the rooms, under the name they were written with,
    and the name stays reserved so that nobody can pose as its author.
    """

    async def delete(store: AdminStore) -> str:
        user = await _user(store, username)
        if user.status == "deleted":
            return f"{user.username} was already deleted."
        details = await store.user_details(user)
        _confirm(
            yes,
            f"Delete the account {user.username!r} for good? Its password and "
            f"{user.sessions} session(s) are erased and it cannot be restored; its "
            f"{details.messages} message(s) stay in their rooms.",
        )
        await store.delete_user(user.id)
        return f"{user.username} is deleted; running servers close their connections at once."

    click.echo(run(db, delete))


# -------------------------------------------------------------------- rooms


@click.group("rooms")
def rooms() -> None:
    """List and delete rooms."""


@rooms.command("list")
@database_options
@json_option
def rooms_list(db: str | None, as_json: bool) -> None:
    """Every stored room: messages, last activity, creation time."""
    found = run(db, lambda store: store.rooms())
    if as_json:
        click.echo(json.dumps([_room_json(room) for room in found], indent=2))
        return
    rows = [(r.name, str(r.messages), _when(r.last_message_ms), _when(r.created_ms)) for r in found]
    _table(("ROOM", "MESSAGES", "LAST MESSAGE", "CREATED"), rows)


@rooms.command("show")
@click.argument("name")
@database_options
@json_option
def rooms_show(name: str, db: str | None, as_json: bool) -> None:
    """One room in detail (never its messages' text)."""
    room = run(db, lambda store: _room(store, name))
    info = _room_json(room)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key.replace('_', ' ') + ':':<17} {_plain(value)}")


@rooms.command("delete")
@click.argument("name")
@database_options
@yes_option
def rooms_delete(name: str, db: str | None, yes: bool) -> None:
    """Delete a room and all its messages, for everyone, now."""

    async def delete(store: AdminStore) -> str:
        room = await _room(store, name)
        _confirm(
            yes,
            f"Delete the room {room.name!r} and its {room.messages} message(s) for everyone? "
            "This cannot be undone.",
        )
        await store.delete_room(room)
        return f"{room.name} is deleted; running servers tell its members at once."

    click.echo(run(db, delete))


# ----------------------------------------------------------------- sessions


@click.group("sessions")
def sessions() -> None:
    """End users' sessions."""


@sessions.command("revoke")
@click.argument("username")
@database_options
def sessions_revoke(username: str, db: str | None) -> None:
    """Log a user out everywhere: every token ends and open connections close."""

    async def revoke(store: AdminStore) -> str:
        user = await _user(store, username)
        ended = await store.revoke_sessions(user.id)
        return (
            f"{user.username}: {ended} session(s) ended; running servers close their "
            "connections within a second. They can log in again with their password."
        )

    click.echo(run(db, revoke))


# ----------------------------------------------------------- backup, check


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@database_options
def backup(file: Path, db: str | None) -> None:
    """Copy the database to FILE, consistently, even while the server runs.

    SQLite only (its online backup API); the copy is checked before this
    command says it is done. For PostgreSQL it says how to use pg_dump.
    """
    url = db or default_db()
    source = sqlite_path(url)
    if source is None:
        raise click.ClickException(_pg_dump_advice(url))
    _require_writable_folder(file)
    logs.configure("WARNING")
    try:
        asyncio.run(asyncio.to_thread(backup_sqlite, source, file))
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    report = run(str(file), lambda store: store.check())
    if not report.ok:
        raise click.ClickException(f"The backup {file} fails its check: {report.problems[0]}")
    counts = ", ".join(f"{n} {table}" for table, n in report.counts.items())
    click.echo(f"Backed up {describe_url(url)} to {file} ({counts}); it passes `check`.")


def _require_writable_folder(file: Path) -> None:
    """Say which folder is missing or closed, not SQLite's "unable to open database file"."""
    folder = file.absolute().parent
    if not folder.is_dir():
        raise click.ClickException(
            f"The folder {folder} does not exist; create it first, owned by the user running "
            f"this command (e.g. install -d -m 0700 -o clubroom -g clubroom {folder})."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.ClickException(
            f"Cannot write into {folder} as this user; run the command as a user that can, "
            "or choose another folder."
        )


def _pg_dump_advice(url: str) -> str:
    return (
        f"{describe_url(url)}: this command backs up SQLite only. Back PostgreSQL up with its "
        "own tools, consistently while Clubroom runs:\n"
        "  pg_dump --format=custom --file=clubroom.dump 'postgresql://USER@HOST:PORT/DB'\n"
        "and restore into a new, empty database with:\n"
        "  pg_restore --dbname='postgresql://USER@HOST:PORT/NEWDB' clubroom.dump\n"
        "(the password comes from PGPASSWORD or ~/.pgpass, never the command line)."
    )


@click.command("check")
@database_options
@json_option
def check(db: str | None, as_json: bool) -> None:
    """Check the database: integrity, schema version, row counts. Exit 1 on a problem."""

    async def inspect(store: AdminStore) -> CheckReport:
        return await store.check()

    logs.configure("WARNING")
    try:
        report = asyncio.run(_with_store(db, inspect))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        click.echo(f"database:        {report.database}")
        click.echo(f"schema version:  {report.schema_version} (latest {report.latest_version})")
        for table, count in report.counts.items():
            click.echo(f"{table + ':':<17}{count}")
        for problem in report.problems:
            click.echo(f"PROBLEM: {problem}")
        click.echo("ok" if report.ok else f"{len(report.problems)} problem(s) found")
    if not report.ok:
        raise SystemExit(1)


async def _with_store(db: str | None, work: Work[T]) -> T:
    """Like ``run`` but without requiring the admin schema (``check`` reports it)."""
    store = await open_admin_store(db or default_db())
    try:
        return await work(store)
    finally:
        await store.close()


COMMANDS: tuple[click.Command, ...] = (users, rooms, sessions, backup, check)


# ------------------------------------------------------------------ helpers


async def _user(store: AdminStore, username: str) -> UserSummary:
    user = await store.user(protocol.username_key(username))
    if user is None:
        raise click.ClickException(f"There is no user called {username!r}.")
    return user


async def _room(store: AdminStore, name: str) -> RoomSummary:
    room = await store.room(protocol.room_key(name))
    if room is None:
        raise click.ClickException(f"There is no room called {name!r}.")
    return room


def _confirm(yes: bool, question: str) -> None:
    if not yes:
        click.confirm(question, abort=True)


def _user_json(user: UserSummary) -> dict[str, Any]:
    return {
        "username": user.username,
        "status": user.status,
        "admin": user.admin,
        "sessions": user.sessions,
        "created_at": _iso(user.created_ms),
    }


def _room_json(room: RoomSummary) -> dict[str, Any]:
    return {
        "room": room.name,
        "messages": room.messages,
        "last_message_at": _iso(room.last_message_ms),
        "created_at": _iso(room.created_ms),
    }


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _when(ms: int | None) -> str:
    return _iso(ms) or "-"


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns; names are printed as they are (never interpreted as markup)."""
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
