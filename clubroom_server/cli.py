"""``clubroom-server``: the command line, and the only place a real server is built."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from clubroom_server import admin, configfile, eventloop, logs, metrics, runner
from clubroom_server.admission import parse_networks, split_list
from clubroom_server.bus import BusStartupError
from clubroom_server.config import ARGON2_PROFILES, DEFAULT_ARGON2_PROFILE, Settings, default_db
from clubroom_server.eventloop import EVENT_LOOPS, EventLoopError
from clubroom_server.logs import LOG_FORMATS, LOG_LEVELS
from clubroom_server.manage.cli import COMMANDS as ADMIN_COMMANDS
from clubroom_server.manage.cli import database_options
from clubroom_server.store import SYNCHRONOUS_MODES, StartupError, StoreError, is_postgres_url
from clubroom_server.store.pacing import MAX_INTERVAL as MAX_COMMIT_INTERVAL
from protocol import FORWARDED_FOR_HEADER

_DEFAULTS = Settings.__dataclass_fields__


class PlainName(click.ParamType):
    """Node ids and channel prefixes go into Redis payloads and logs: letters, digits, ``.-_``."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
            self.fail("use 1 to 64 letters, digits, '.', '-' or '_'", param, ctx)
        return value


PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
NODE_ID = PlainName()

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _option(flag: str, field: str, kind: Any, help: str, **extra: Any) -> Decorator:
    """A ``serve`` option also read from ``CLUBROOM_<FLAG>`` (``--db`` → ``CLUBROOM_DB``)."""
    default = extra.pop("default", None)
    if default is None and field in _DEFAULTS:
        field_default = _DEFAULTS[field].default
        default = field_default if isinstance(field_default, str | int | float) else None
    return click.option(
        flag,
        field,
        type=kind,
        default=default,
        envvar="CLUBROOM_" + flag.lstrip("-").upper().replace("-", "_"),
        show_default=default is not None,
        show_envvar=True,
        help=help,
        **extra,
    )


SERVE_OPTIONS = [
    _option("--host", "host", str, "Address to listen on (use 0.0.0.0 to accept remote clients)."),
    _option("--port", "port", click.IntRange(0, 65535), "TCP port (0 picks a free one)."),
    _option(
        "--db",
        "db",
        str,
        "Database: a SQLite file path or sqlite:///path, or postgresql://user@host:port/db "
        "[default: the user data directory, clubroom/clubroom.db].",
    ),
    _option(
        "--grace", "grace", click.FloatRange(0), "Seconds a dropped connection stays a member."
    ),
    _option(
        "--rate-limit",
        "rate_limit",
        click.FloatRange(0),
        "Messages a second per user (0 = no limit).",
    ),
    _option("--rate-burst", "rate_burst", click.IntRange(1), "Messages a user may send at once."),
    _option(
        "--room-rate-limit",
        "room_rate_limit",
        click.FloatRange(0),
        "Room creations and joins a second per user (0 = no limit).",
    ),
    _option(
        "--room-rate-burst",
        "room_rate_burst",
        click.IntRange(1),
        "Room creations and joins a user may make at once.",
    ),
    _option("--max-frame", "max_frame", click.IntRange(256), "Largest frame accepted, in bytes."),
    _option(
        "--argon2-profile",
        "argon2_profile",
        click.Choice(sorted(ARGON2_PROFILES)),
        "Password hashing cost.",
        default=DEFAULT_ARGON2_PROFILE,
    ),
    _option(
        "--hash-workers",
        "hash_workers",
        click.IntRange(1),
        "Threads that hash passwords (bounds the CPU a login storm takes).",
    ),
    _option(
        "--login-failures-per-user",
        "login_failures_per_user",
        click.IntRange(0),
        "Failed logins a username may have per window (0 = no limit).",
    ),
    _option(
        "--login-failures-per-address",
        "login_failures_per_address",
        click.IntRange(0),
        "Failed logins and resumes an address may have per window (0 = no limit).",
    ),
    _option(
        "--login-window",
        "login_window",
        click.FloatRange(1),
        "The window for failed logins, in seconds.",
    ),
    _option(
        "--max-connections-per-address",
        "max_connections_per_address",
        click.IntRange(0),
        "Open connections one address may have (0 = no limit).",
    ),
    _option(
        "--handshake-timeout",
        "handshake_timeout",
        click.FloatRange(0.1),
        "Seconds a client has to finish the WebSocket handshake.",
    ),
    _option(
        "--idle-timeout",
        "idle_timeout",
        click.FloatRange(0),
        "Seconds a connection may stay open without logging in (0 = forever).",
    ),
    _option(
        "--ping-interval",
        "ping_interval",
        click.FloatRange(0),
        "Seconds between keep-alive pings; a client that misses one is dropped (0 = off).",
    ),
    _option(
        "--send-buffer-limit",
        "send_buffer_limit",
        click.IntRange(1024),
        "Bytes queued for a client that does not read before it is closed (code 4008).",
    ),
    _option(
        "--synchronous",
        "synchronous",
        click.Choice(SYNCHRONOUS_MODES, case_sensitive=False),
        "SQLite durability: FULL syncs every commit to disk.",
    ),
    _option(
        "--certfile",
        "certfile",
        click.Path(exists=True, dir_okay=False, path_type=Path),
        "PEM certificate chain: serve wss:// (TLS).",
    ),
    _option(
        "--keyfile",
        "keyfile",
        click.Path(exists=True, dir_okay=False, path_type=Path),
        "PEM private key for --certfile (if not inside it).",
    ),
    _option(
        "--bus",
        "bus",
        str,
        "Run as one node of a cluster: redis://host:port/db of the Redis the nodes share "
        "(needs a postgresql:// --db).",
    ),
    _option(
        "--node-id",
        "node_id",
        NODE_ID,
        "This node's name in the cluster [default: host-pid-random, unique].",
    ),
    _option(
        "--bus-prefix",
        "bus_prefix",
        NODE_ID,
        "Prefix of this cluster's Redis channels (clusters sharing one Redis need different ones).",
    ),
    _option(
        "--node-lease",
        "node_lease",
        click.FloatRange(1),
        "Seconds a cluster node's lease lasts; a node silent that long is treated as gone.",
    ),
    _option(
        "--log-level",
        "log_level",
        click.Choice(LOG_LEVELS, case_sensitive=False),
        "How much to log (never passwords or tokens).",
    ),
    # Hardening, round 2 (issue 10): new options stay at the end to ease merging.
    _option(
        "--hash-queue-limit",
        "hash_queue_limit",
        click.IntRange(1),
        "Password checks that may wait for a hashing thread; more are refused at once.",
    ),
    _option(
        "--registrations-per-address",
        "registrations_per_address",
        click.IntRange(0),
        "Registrations (and taken-name probes) an address may make per window (0 = no limit).",
    ),
    _option(
        "--registrations-total",
        "registrations_total",
        click.IntRange(0),
        "Accounts the whole server may create per window (0 = no limit).",
    ),
    _option(
        "--registration-window",
        "registration_window",
        click.FloatRange(1),
        "The window for registration limits, in seconds.",
    ),
    _option(
        "--backlog-limit",
        "backlog_limit",
        click.IntRange(64 * 1024),
        "Bytes of unsent output above which a client's requests wait (backpressure).",
    ),
    _option(
        "--allowed-origin",
        "allowed_origins",
        str,
        "A web origin (https://host[:port]) whose pages may connect; repeatable. "
        "No Origin and this server's own are always accepted.",
        multiple=True,
        callback=lambda _ctx, _param, value: split_list(value),
    ),
    _option(
        "--trusted-proxy",
        "trusted_proxies",
        str,
        f"Address or CIDR of a reverse proxy whose {FORWARDED_FOR_HEADER} header names "
        "the client; repeatable.",
        multiple=True,
        callback=lambda _ctx, _param, value: _networks(value),
    ),
    _option(
        "--max-handshakes-per-address",
        "max_handshakes_per_address",
        click.IntRange(0),
        "Unfinished handshakes one address may hold; more are dropped at accept (0 = no limit).",
    ),
    _option(
        "--max-handshakes",
        "max_handshakes",
        click.IntRange(0),
        "Unfinished handshakes the server holds in all (0 = no limit).",
    ),
    _option(
        "--db-pool-size",
        "db_pool_size",
        click.IntRange(2),
        "PostgreSQL only: connections kept to the database.",
    ),
    _option(
        "--commit-interval",
        "commit_interval",
        click.FloatRange(0, MAX_COMMIT_INTERVAL),
        "Seconds: while messages stream in, commit at most this often, so that they share "
        "a commit and a socket write (a message after a quiet spell is committed at once; "
        "0 = commit every batch at once).",
    ),
    _option(
        "--search-timeout",
        "search_timeout",
        click.FloatRange(0.001),
        "Seconds a search may run; a longer one is stopped and answered invalid_query.",
    ),
    _option(
        "--log-format",
        "log_format",
        click.Choice(LOG_FORMATS, case_sensitive=False),
        "Log lines as text, or one JSON object a line (for log shippers).",
    ),
    _option(
        "--metrics-address",
        "metrics_address",
        str,
        "Serve Prometheus /metrics on HOST:PORT (a bare PORT means 127.0.0.1), or off.",
    ),
    _option(
        "--drain-timeout",
        "drain_timeout",
        click.FloatRange(0),
        "Seconds a stop waits for clients to take their last replies and close (code 1012).",
    ),
    _option(
        "--event-loop",
        "event_loop",
        click.Choice(EVENT_LOOPS, case_sensitive=False),
        "auto: uvloop when installed (pip install 'clubroom[speed]'), else asyncio's own.",
    ),
]


def _check_cluster(settings: Settings) -> None:
    """A cluster shares one database, which SQLite (a local file) cannot be."""
    if settings.bus is None:
        return
    if urlsplit(settings.bus).scheme not in ("redis", "rediss", "unix"):
        raise click.UsageError("--bus takes a Redis URL: redis://host:port/db.")
    if not is_postgres_url(settings.db):
        raise click.UsageError(
            "--bus (a cluster) needs a database all nodes share: "
            "--db postgresql://user@host:port/database."
        )


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    """Validate ``--trusted-proxy`` values early, with a clear message."""
    parts = split_list(values)
    try:
        return tuple(str(network) for network in parse_networks(parts))
    except ValueError as exc:
        raise click.BadParameter(f"not an IP address or CIDR block: {exc}") from None


_CONFIG_META = "clubroom.config_path"


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Read --config before the other options, as their defaults (flags and env still win)."""
    if value is None:
        return
    ctx.meta[_CONFIG_META] = value
    ctx.default_map = {**(ctx.default_map or {}), **configfile.load(value, ctx.command.params)}


CONFIG_OPTION = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="CLUBROOM_CONFIG",
    show_envvar=True,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file with any of these options (keys without the dashes, e.g. rate-limit = 5).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Clubroom chat server."""


def _serve_command(fn: Callable[..., Any]) -> click.Command:
    for option in reversed([*SERVE_OPTIONS, CONFIG_OPTION]):
        fn = option(fn)
    return main.command("serve")(fn)


@_serve_command
def serve(**options: Any) -> None:
    """Run the server until Ctrl-C or SIGTERM, then drain and shut down in order (exit 0).

    Every option can also be set with the environment variable shown, or
    in the --config file; SIGHUP reloads what can change while running.
    """
    ctx = click.get_current_context()
    settings = settings_from(options)
    _check_cluster(settings)
    logs.configure(settings.log_level, settings.log_format, node=settings.node_id)
    text = settings.log_format == "text"  # JSON logs: stdout and stderr carry JSON only
    try:
        loop = eventloop.choose(settings.event_loop.lower())
    except EventLoopError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        eventloop.run(runner.run(settings, _reloader(ctx), click.echo if text else _quiet), loop)
    except (StartupError, BusStartupError) as exc:
        raise click.ClickException(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(
            f"The database failed while the server was starting ({exc}); start it again."
        ) from None
    except OSError as exc:
        raise click.ClickException(f"Could not start the server: {exc.strerror or exc}") from None


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings from resolved option values (None = not given anywhere: the default)."""
    settings = Settings(**{k: v for k, v in options.items() if v is not None})
    if settings.keyfile and not settings.certfile:
        raise click.UsageError("--keyfile needs --certfile.")
    try:
        metrics.parse_address(settings.metrics_address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-address") from None
    return settings.replace(log_format=settings.log_format.lower())


def _reloader(ctx: click.Context) -> runner.Reload:
    """SIGHUP's re-read: flags and environment as at start, the config file as it is now."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    fixed = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k) in given}
    path: Path | None = ctx.meta.get(_CONFIG_META)

    def reload() -> Settings:
        from_file = configfile.load(path, ctx.command.params) if path else {}
        values: dict[str, Any] = {}
        for param in ctx.command.params:
            if not param.expose_value or param.name is None:
                continue
            if param.name in fixed:
                values[param.name] = fixed[param.name]
            else:
                raw = from_file.get(param.name, param.default)
                values[param.name] = None if raw is None else param.type_cast_value(ctx, raw)
        return settings_from(values)

    return reload


def _quiet(_: str) -> None:
    """With JSON logs the human-readable lines are left out (the log says the same)."""


_DB_HELP = "A SQLite file path or sqlite:///path, or postgresql://user@host:port/db."


@main.command("migrate")
@database_options
def migrate(db: str | None) -> None:
    """Bring a database's schema up to date (serve does this too), then exit."""
    _run_admin(admin.migrate(db or default_db()))


@main.command("copy")
@click.option("--from", "source", required=True, help="The database to copy. " + _DB_HELP)
@click.option("--to", "target", required=True, help="An empty database to fill. " + _DB_HELP)
def copy(source: str, target: str) -> None:
    """Copy users, tokens, rooms and messages (ids kept) into an empty database.

    Stop the server first: what is written to the source meanwhile is not copied.
    """
    _run_admin(admin.copy(source, target, progress=click.echo))


for _command in ADMIN_COMMANDS:  # users, rooms, sessions, backup, check
    main.add_command(_command)


def _run_admin(work: Any) -> None:
    logs.configure("WARNING")
    try:
        click.echo(asyncio.run(work))
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
