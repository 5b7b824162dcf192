"""``serve --config clubroom.toml``: flags > environment > file > defaults, and no unknown key."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from clubroom_server.cli import serve, settings_from
from clubroom_server.config import Settings
from tests.cluster.harness import CLUSTER_DEFAULTS, InProcessCluster, bus_prefix
from tests.conftest import TEST_DEFAULTS
from tests.databases import fresh_postgres
from tests.server.serverprocess import ServerProcess
from tests.services import redis_url
from tests.wsclient import resumed, user


def resolved(*args: str) -> Settings:
    """The settings ``serve`` would run with, parsed exactly as from the command line."""
    ctx = serve.make_context("serve", list(args))
    return settings_from(ctx.params)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "clubroom.toml"
    path.write_text('port = 7001\nrate-limit = 2.5\ndb = "data/chat.db"\nlog-format = "json"\n')
    return path


def test_the_file_overrides_the_defaults(config: Path) -> None:
    """Keys of the file replace the built-in defaults; relative paths start at the file."""
    settings = resolved("--config", str(config))
    assert (settings.port, settings.rate_limit, settings.log_format) == (7001, 2.5, "json")
    assert Path(settings.db) == config.parent / "data" / "chat.db"
    assert settings.grace == Settings().grace


def test_the_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLUBROOM_* variable wins over the same key in the file."""
    monkeypatch.setenv("CLUBROOM_PORT", "7002")
    assert resolved("--config", str(config)).port == 7002


def test_a_flag_overrides_the_environment_and_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command-line flag wins over both."""
    monkeypatch.setenv("CLUBROOM_PORT", "7002")
    assert resolved("--config", str(config), "--port", "7003").port == 7003


def test_the_config_path_can_come_from_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLUBROOM_CONFIG names the file, for unit files that prefer the environment."""
    monkeypatch.setenv("CLUBROOM_CONFIG", str(config))
    assert resolved().port == 7001


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_limit = 3\n", "unknown key 'rate_limit' (did you mean 'rate-limit'?)"),
        ("prot = 1\n", "unknown key 'prot' (did you mean 'port'?)"),
        ("[server]\nport = 1\n", "unknown key 'server'"),
        ("config = 'other.toml'\n", "unknown key 'config'"),
        ("port = [1, 2]\n", "'port' must be a single value"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_an_error_that_names_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    """An unknown key, a table or broken TOML stops the start with the file and the reason."""
    path = tmp_path / "clubroom.toml"
    path.write_text(text)
    with pytest.raises(click.ClickException) as error:
        resolved("--config", str(path))
    assert str(path) in error.value.format_message()
    assert expected in error.value.format_message()


def test_a_wrong_value_names_the_option(tmp_path: Path) -> None:
    """A value of the wrong type is refused like the same flag would be."""
    path = tmp_path / "clubroom.toml"
    path.write_text('port = "lots"\n')
    with pytest.raises(click.BadParameter) as error:
        resolved("--config", str(path))
    assert "--port" in error.value.format_message()


async def test_a_server_starts_from_its_config_file(tmp_path: Path) -> None:
    """``serve --config`` runs a real server with the file's database and limits."""
    path = tmp_path / "clubroom.toml"
    path.write_text('port = 0\ndb = "chat.db"\nargon2-profile = "cheapest"\nmax-frame = 1024\n')
    server = await ServerProcess.start("--config", str(path))
    client = await user(server.url, "ann")
    await client.ws.send('{"type": "logout", "pad": "' + "x" * 2000 + '"}')
    assert await client.wait_closed() == 1009
    assert await server.terminate() == 0
    assert (tmp_path / "chat.db").is_file()


def test_the_shipped_example_config_is_valid() -> None:
    """contrib/clubroom.toml, which the README tells operators to copy, parses cleanly."""
    example = Path(__file__).parents[2] / "contrib" / "clubroom.toml"
    settings = resolved("--config", str(example))
    assert (settings.log_format, settings.metrics_address) == ("json", "127.0.0.1:9464")


async def test_a_reload_changes_the_cluster_wide_message_rate_too() -> None:
    """On cluster nodes the message rate is one budget in Redis: a reload (SIGHUP runs
    ``reload``) that turns the limit off turns it off there as well, not only on each node."""
    async with fresh_postgres() as db:
        settings = Settings(
            **{**TEST_DEFAULTS, **CLUSTER_DEFAULTS, "db": db, "bus": redis_url(),
               "bus_prefix": bus_prefix(), "rate_limit": 0.01, "rate_burst": 2}
        )  # fmt: skip
        cluster = InProcessCluster(settings, nodes=2)
        await cluster.start()
        try:
            ann = await user(cluster.node_url(0), "ann")
            again = await resumed(cluster.node_url(1), ann.token)
            await ann.ok("create_room", room="Lobby")
            await again.ok("join_room", room="Lobby")
            await ann.ok("send", room="Lobby", text="one")
            await again.ok("send", room="Lobby", text="two")
            assert (await ann.call("send", room="Lobby", text="three"))["code"] == "rate_limited"
            for app in cluster.apps:
                assert app is not None
                app.reload(settings.replace(rate_limit=0))
            for n in range(5):
                await again.ok("send", room="Lobby", text=f"more {n}")
            for client in (ann, again):
                await client.close()
        finally:
            await cluster.stop()
