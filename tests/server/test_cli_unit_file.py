"""contrib/clubroom.service, the unit file the README tells operators to install.

The parts issue 14 asks for are read from the file itself; ``systemd-analyze
verify`` and ``security`` (offline, no running systemd needed) judge it as
systemd would. The unit and contrib/clubroom.toml must agree on the
database, or the admin commands (``--config``) would work on another one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clubroom_server.cli import serve
from clubroom_server.configfile import load
from tests.services import unusable

CONTRIB = Path(__file__).parents[2] / "contrib"
UNIT = CONTRIB / "clubroom.service"
EXPOSURE_LIMIT = 2.0  # systemd-analyze security: 0 (locked down) … 10 (exposed); "OK" is < 3


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (a key may repeat), comments left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(unit: dict[str, list[str]], key: str) -> str:
    assert key in unit, f"the unit has no {key}="
    return unit[key][-1]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_the_unit_has_the_hardening_and_service_manager_parts() -> None:
    """notify + watchdog, a dedicated user, a state directory, strict protection, restart on
    failure, SIGHUP for reload and time enough to drain."""
    unit = directives(UNIT.read_text())
    assert one(unit, "Type") == "notify"
    assert seconds(one(unit, "WatchdogSec")) >= 30, "the server pings every half of it"
    assert one(unit, "User") == "clubroom" or one(unit, "DynamicUser") == "yes"
    assert one(unit, "StateDirectory") == "clubroom"
    assert one(unit, "StateDirectoryMode") == "0700"
    assert one(unit, "ProtectSystem") == "strict"
    assert int(one(unit, "LimitNOFILE")) >= 65536
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "KillSignal") == "SIGTERM"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "RestrictSUIDSGID"):
        assert one(unit, key) == "yes", key
    assert one(unit, "CapabilityBoundingSet") == "", "no capabilities"
    config = load(CONTRIB / "clubroom.toml", serve.params)
    drain = float(config.get("drain_timeout", 10))
    assert seconds(one(unit, "TimeoutStopSec")) > drain, "systemd must not kill a drain"


def test_the_unit_and_the_example_config_name_the_same_database() -> None:
    """The server and the admin commands (--config) open the file in the StateDirectory."""
    unit = directives(UNIT.read_text())
    assert "--config /etc/clubroom/clubroom.toml" in one(unit, "ExecStart")
    assert not any(value.startswith("CLUBROOM_DB=") for value in unit.get("Environment", []))
    config = load(CONTRIB / "clubroom.toml", serve.params)
    state = Path("/var/lib") / one(unit, "StateDirectory")
    assert Path(config["db"]).parent == state


@pytest.fixture
def analyzable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's server (verify checks it)."""
    if shutil.which("systemd-analyze") is None:
        unusable("systemd-analyze is not installed here (Debian: apt-get install systemd)")
    server = Path(sys.executable).parent / "clubroom-server"
    copy = tmp_path / "clubroom.service"
    copy.write_text(UNIT.read_text().replace("/opt/clubroom/bin/clubroom-server", str(server)))
    return copy


def test_systemd_analyze_accepts_the_unit_and_rates_it_safe(analyzable_unit: Path) -> None:
    """``verify`` finds nothing to say; ``security`` rates the exposure below the limit."""
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(analyzable_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(analyzable_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match, security.stdout + security.stderr
    assert float(match.group(1)) <= EXPOSURE_LIMIT
