"""The ``clubroom`` command line: help text, argument checks and TLS with a private CA."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from clubroom_tui.cli import main, tls_context
from tests.conftest import MakeServer
from tests.tui.conftest import PASSWORD, fast_client, wait_for, wait_ready


def test_group_lists_connect() -> None:
    """``clubroom --help`` names the connect command."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "connect" in result.output


def test_connect_help_documents_options_and_keys() -> None:
    """``clubroom connect --help`` explains the URL, the options and every key."""
    result = CliRunner().invoke(main, ["connect", "--help"], terminal_width=100)
    assert result.exit_code == 0
    for needle in (
        "ws://127.0.0.1:8765",
        "--cafile",
        "--config-dir",
        "--no-remember",
        "Remember me",
        "ctrl+q",
        "ctrl+p",
        "escape",
        "ctrl+o log out (asks first",
        "tab completes a member's name",
        'Leave room" (asks first)',
        "older messages",
    ):
        assert needle in result.output, needle


def test_rejects_a_non_websocket_url() -> None:
    """An http:// address is refused with a usage error, not a traceback."""
    result = CliRunner().invoke(main, ["connect", "http://example.org"])
    assert result.exit_code == 2
    assert "use a ws:// or wss:// address" in result.output


@pytest.fixture
def private_ca(tmp_path: Path) -> dict[str, Path]:
    """A CA of our own, a server certificate it signed for 127.0.0.1, and their files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    return files


async def test_cafile_makes_a_private_ca_trusted(
    make_server: MakeServer, private_ca: dict[str, Path]
) -> None:
    """With --cafile, a wss:// server whose certificate a private CA signed is reached."""
    server = await make_server(certfile=private_ca["cert"], keyfile=private_ca["key"])
    url = f"wss://127.0.0.1:{server.port}"
    client = fast_client(url, ssl=tls_context(url, private_ca["ca"]))
    await client.start()
    try:
        await wait_ready(client)
        assert (await client.register("ann", PASSWORD)).username == "ann"
    finally:
        await client.close()


async def test_untrusted_certificate_is_explained(
    make_server: MakeServer, private_ca: dict[str, Path]
) -> None:
    """Without --cafile, the client says the certificate is not trusted and how to fix it."""
    server = await make_server(certfile=private_ca["cert"], keyfile=private_ca["key"])
    url = f"wss://127.0.0.1:{server.port}"
    client = fast_client(url, ssl=tls_context(url, None))
    await client.start()
    try:
        await wait_for(lambda: "not trusted" in client.state_detail, "the TLS failure")
        assert "--cafile" in client.state_detail
    finally:
        await client.close()
