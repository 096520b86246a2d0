"""TLS on loopback with certificates made by trustme for the session."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import (
    Ping,
    RawPeer,
    TlsFiles,
    echo_app,
    eventually,
    run,
    silent_server,
    tcp_socket,
    tls_files,
    typed_pipeline,
    within,
)

from framework.app import App
from framework.endpoints import parse_url
from framework.errors import ConfigError, TransportError
from framework.limits import Limits
from framework.runtime import connect
from framework.runtime.connection import Connection
from framework.runtime.tls import TlsOptions
from framework.transports.base import open_stream

__all__ = ["tls_files"]  # the fixture, imported for pytest


def tls_app() -> App:
    return echo_app(typed_pipeline())


async def ping(url: str, app: App, tls: TlsOptions | None) -> Any:
    async with connect(url, app.pipeline, tls=tls) as conn:
        await conn.send(Ping(7))
        return await within(conn.receive())


def test_client_trusting_the_ca_is_served(tls_files: TlsFiles) -> None:
    app = tls_app()
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            assert server.url.startswith("tls://127.0.0.1:")
            async with connect(server.url, app.pipeline, tls=tls_files.client_options()) as conn:
                await conn.send(Ping(1))
                assert await within(conn.receive()) == Ping(1)
                version = server_conns[0]._transport.get_extra_info("ssl_object").version()
                assert version in ("TLSv1.2", "TLSv1.3")

    run(main())


def test_host_name_is_checked(tls_files: TlsFiles) -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            wrong = tls_files.client_options(server_hostname="elsewhere.example")
            with pytest.raises(TransportError, match="TLS handshake"):
                await ping(server.url, app, wrong)
            unchecked = tls_files.client_options(
                server_hostname="elsewhere.example", check_hostname=False
            )
            assert await ping(server.url, app, unchecked) == Ping(7)
            by_name = f"tls://localhost:{server.endpoint.port}"
            assert await ping(by_name, app, tls_files.client_options()) == Ping(7)

    run(main())


@pytest.mark.parametrize("trust", ["other-ca", "system-roots", "no-options"])
def test_client_not_trusting_the_ca_fails_with_transport_error(
    trust: str, tls_files: TlsFiles
) -> None:
    app = tls_app()
    options = {
        "other-ca": TlsOptions(cafile=tls_files.other_ca),
        "system-roots": TlsOptions(),
        "no-options": None,
    }[trust]

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            with pytest.raises(TransportError, match="TLS handshake") as info:
                await ping(server.url, app, options)
            assert isinstance(info.value.__cause__, ssl.SSLError)
            assert server.connections == set()
            # The server goes on serving clients that trust it.
            assert await ping(server.url, app, tls_files.client_options()) == Ping(7)

    run(main())


def mutual(tls_files: TlsFiles) -> TlsOptions:
    return tls_files.server_options(cafile=tls_files.ca, require_client_cert=True)


def test_required_client_certificate_refuses_a_client_without_one(tls_files: TlsFiles) -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=mutual(tls_files)) as server:
            # With TLS 1.3 the client may finish its handshake before the
            # server checks for a certificate: the refusal then ends the
            # connection at the first read. Either way, a TransportError.
            with pytest.raises(TransportError):
                await ping(server.url, app, tls_files.client_options())
            await eventually(lambda: not server.connections)

    run(main())


def test_required_client_certificate_signed_by_the_ca_is_served(tls_files: TlsFiles) -> None:
    app = tls_app()
    client = tls_files.client_options(certfile=tls_files.client, keyfile=tls_files.client)

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=mutual(tls_files)) as server:
            assert await ping(server.url, app, client) == Ping(7)

    run(main())


def test_required_client_certificate_from_another_ca_is_refused(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    import trustme

    stranger = trustme.CA().issue_cert("client.wirekit.test")
    pem = tmp_path / "stranger.pem"
    stranger.private_key_and_cert_chain_pem.write_to_path(str(pem))
    app = tls_app()
    client = tls_files.client_options(certfile=str(pem), keyfile=str(pem))

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=mutual(tls_files)) as server:
            with pytest.raises(TransportError):
                await ping(server.url, app, client)

    run(main())


async def raw_tls(url: str, context: ssl.SSLContext) -> RawPeer:
    transport, protocol = await within(open_stream(parse_url(url), RawPeer, ssl_context=context))
    assert isinstance(protocol, RawPeer)
    transport.abort()
    await protocol.wait_closed()
    return protocol


def test_only_tls_1_2_and_newer(tls_files: TlsFiles) -> None:
    app = tls_app()
    server_options = tls_files.server_options()
    assert server_options.server_context().minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_files.client_options().client_context().minimum_version == ssl.TLSVersion.TLSv1_2

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=server_options) as server:
            tls12 = ssl.create_default_context(cafile=tls_files.ca)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            await raw_tls(server.url, tls12)
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(tls_files.ca)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, rightly
                old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                old.maximum_version = ssl.TLSVersion.TLSv1_1
                with pytest.raises(TransportError):
                    await raw_tls(server.url, old)

    run(main())


def test_stalled_handshake_is_cut_off_after_handshake_timeout(tls_files: TlsFiles) -> None:
    app = tls_app()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(handshake_timeout=0.2)
        async with await app.start(
            "tls://127.0.0.1:0", tls=tls_files.server_options(), limits=limits
        ) as server:
            with tcp_socket(server.url.replace("tls://", "tcp://")) as sock:
                start = loop.time()
                with contextlib.suppress(ConnectionResetError):
                    assert await within(loop.sock_recv(sock, 1024)) == b""
                assert 0.1 < loop.time() - start < 2
            assert await ping(server.url, app, tls_files.client_options()) == Ping(7)

    run(main())


def test_plain_client_on_a_tls_port_does_not_disturb_it(tls_files: TlsFiles) -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            plain = server.url.replace("tls://", "tcp://")
            conn = await connect(plain, app.pipeline)
            conn.send_nowait(Ping(1))
            await within(conn.wait_closed())
            assert await ping(server.url, app, tls_files.client_options()) == Ping(7)

    run(main())


def test_tls_configuration_errors(tls_files: TlsFiles, tmp_path: Path) -> None:
    app = tls_app()

    async def main() -> None:
        with pytest.raises(ConfigError, match="certfile"):
            await app.start("tls://127.0.0.1:0")
        with pytest.raises(ConfigError, match="certfile"):
            await app.start("tls://127.0.0.1:0", tls=TlsOptions())
        with pytest.raises(ConfigError, match="cafile"):
            await app.start(
                "tls://127.0.0.1:0", tls=tls_files.server_options(require_client_cert=True)
            )
        missing = str(tmp_path / "missing.pem")
        with pytest.raises(ConfigError, match=r"missing\.pem") as info:
            await app.start("tls://127.0.0.1:0", tls=TlsOptions(certfile=missing))
        assert info.value.option == "certfile"
        with pytest.raises(ConfigError, match="CA file") as info:
            TlsOptions(cafile=missing).client_context()
        assert info.value.option == "cafile"

    run(main())


def test_connect_gives_up_on_a_server_that_never_completes_the_handshake(
    tls_files: TlsFiles,
) -> None:
    app = tls_app()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with silent_server() as (port, _accepted):
            start = loop.time()
            with pytest.raises(TransportError):
                await connect(
                    f"tls://127.0.0.1:{port}",
                    app.pipeline,
                    tls=tls_files.client_options(),
                    limits=Limits(handshake_timeout=0.2),
                )
            assert loop.time() - start < 2

    run(main())
