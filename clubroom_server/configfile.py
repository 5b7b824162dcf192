"""``--config clubroom.toml``: the serve options from a TOML file.

The keys are the option names without the dashes (``rate-limit = 5``,
``db = "clubroom.db"``). The file fills click's ``default_map``, which gives
exactly the precedence operators expect: command-line flags, then
``CLUBROOM_*`` environment variables, then the file, then the built-in
defaults. An unknown key is an error that names it (a typo must never be
silently ignored); relative paths are relative to the file's folder.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

PATH_OR_URL_OPTIONS = frozenset({"db"})
"""Options whose value is a file path unless it is a URL (``postgresql://…``)."""


class ConfigError(click.ClickException):
    """The configuration file cannot be used; the message says where and why."""


def option_keys(params: Iterable[click.Parameter]) -> dict[str, click.Option]:
    """The file keys (long flag names without ``--``) of a command's options."""
    keys: dict[str, click.Option] = {}
    for param in params:
        if isinstance(param, click.Option) and param.expose_value:
            long_flags = [opt for opt in param.opts if opt.startswith("--")]
            if long_flags:
                keys[long_flags[0][2:]] = param
    return keys


def load(path: Path, params: Iterable[click.Parameter]) -> dict[str, Any]:
    """The file's values keyed by parameter name, ready for ``ctx.default_map``."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.") from None
    keys = option_keys(params)
    values: dict[str, Any] = {}
    for key, value in data.items():
        option = keys.get(key)
        if option is None or key == "config":
            raise ConfigError(f"{path}: unknown key {key!r}{_suggestion(key, keys)}.")
        if isinstance(value, dict | list):
            raise ConfigError(f"{path}: {key!r} must be a single value, not a table or list.")
        if isinstance(value, str) and _is_path(option) and "://" not in value:
            value = str(path.parent / Path(value).expanduser())  # absolute paths stay as they are
        assert option.name is not None
        values[option.name] = value
    return values


def _is_path(option: click.Option) -> bool:
    """File options, and ``db`` (whose URLs the caller leaves alone)."""
    return isinstance(option.type, click.Path) or option.name in PATH_OR_URL_OPTIONS


def _suggestion(key: str, keys: Iterable[str]) -> str:
    candidates = difflib.get_close_matches(key.replace("_", "-"), list(keys), n=1)
    if candidates:
        return f" (did you mean {candidates[0]!r}?)"
    return " (see clubroom-server serve --help)"
