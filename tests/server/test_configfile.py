"""``serve --config clubroom.toml``: flags > environment > file > defaults, and no unknown key."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from clubroom_server.cli import serve, settings_from
from clubroom_server.config import Settings
from tests.server.serverprocess import ServerProcess
from tests.wsclient import user


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
