"""TLS on loopback with certificates made by trustme for the session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
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

from framework.core.endpoints import parse_url
from framework.core.errors import ConfigError, FrameTooLarge, TransportError
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed
from framework.runtime.tls import TlsOptions
from framework.runtime.transports.base import open_stream

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


def test_certificate_for_another_name_fails_with_a_clear_error(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    import trustme

    ca = trustme.CA()
    wrong = ca.issue_cert("elsewhere.example")  # valid, trusted, but not for 127.0.0.1
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    wrong.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "wrong.pem"))
    app = tls_app()
    server_tls = TlsOptions(certfile=str(tmp_path / "wrong.pem"))

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=server_tls) as server:
            with pytest.raises(TransportError, match="TLS handshake") as info:
                await ping(server.url, app, TlsOptions(cafile=str(tmp_path / "ca.pem")))
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            assert "127.0.0.1" in str(info.value)  # names what did not match
            await eventually(lambda: server.handshake_failures == 1)

    run(main())


def test_tls_client_on_a_plaintext_port_says_the_server_does_not_speak_tls(
    tls_files: TlsFiles,
) -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            tls_url = server.url.replace("tcp://", "tls://")
            with pytest.raises(TransportError, match="does not seem to speak TLS") as info:
                await within(connect(tls_url, app.pipeline, tls=tls_files.client_options()))
            assert server.url in str(info.value)  # names the plain URL to use instead

    run(main())


def test_tls_client_on_a_port_answering_plaintext_says_the_server_does_not_speak_tls(
    tls_files: TlsFiles,
) -> None:
    """A server that answers the ClientHello with text (an HTTP error page, a banner)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        listener = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TransportError, match="does not seem to speak TLS") as info:
                await within(
                    connect(
                        f"tls://127.0.0.1:{port}", typed_pipeline(), tls=tls_files.client_options()
                    )
                )
            assert isinstance(info.value.__cause__, ssl.SSLError)
        finally:
            listener.close()
            await listener.wait_closed()

    run(main())


def test_plaintext_client_on_a_tls_port_ends_quickly_and_is_logged_in_one_line(
    tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    app = tls_app()
    caplog.set_level(logging.INFO)
    handled: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: handled.append(ctx))
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            conn = await connect(server.url.replace("tls://", "tcp://"), app.pipeline)
            conn.send_nowait(Ping(1))
            await within(conn.wait_closed())
            with pytest.raises(ConnectionClosed) as info:
                await conn.receive()
            # The server answered with a TLS alert record, which the client's
            # length-prefix framing cannot read as a frame.
            assert isinstance(info.value.__cause__, FrameTooLarge)
            assert server.handshake_failures == 1
            assert server.connections == set()
            assert await ping(server.url, app, tls_files.client_options()) == Ping(7)

    run(main())
    lines = [
        r.getMessage() for r in caplog.records if "plaintext client on a TLS port" in r.getMessage()
    ]
    assert len(lines) == 1
    assert "127.0.0.1" in lines[0]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith(("wirekit", "asyncio")))
    assert handled == []


def test_plaintext_client_on_a_tls_port_is_told_the_server_speaks_tls(
    tls_files: TlsFiles,
) -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=tls_files.server_options()) as server:
            conn = await connect(server.url.replace("tls://", "tcp://"), app.pipeline)
            conn.send_nowait(Ping(1))
            await within(conn.wait_closed())
            with pytest.raises(ConnectionClosed) as info:
                await conn.receive()
            assert "TLS" in str(info.value.__cause__)

    run(main())


def two_servers_certificates(tmp_path: Path) -> tuple[TlsOptions, TlsOptions, str, str]:
    """Certificates for 127.0.0.1 from two CAs: (first, second, first CA, second CA)."""
    import trustme

    paths = []
    for name in ("first", "second"):
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(str(tmp_path / f"{name}-ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.pem"))
        paths.append((str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}-ca.pem")))
    (first, first_ca), (second, second_ca) = paths
    return TlsOptions(certfile=first), TlsOptions(certfile=second), first_ca, second_ca


def test_reload_tls_gives_new_connections_the_new_certificate(tmp_path: Path) -> None:
    first, second, first_ca, second_ca = two_servers_certificates(tmp_path)
    live = str(tmp_path / "live.pem")
    shutil.copy(first.certfile or "", live)
    app = tls_app()

    async def main() -> None:
        async with await app.start("tls://127.0.0.1:0", tls=TlsOptions(certfile=live)) as server:
            old = await connect(server.url, app.pipeline, tls=TlsOptions(cafile=first_ca))
            with pytest.raises(TransportError, match="TLS handshake"):
                await ping(server.url, app, TlsOptions(cafile=second_ca))
            # The certificate file is replaced (a renewal), then the server told.
            shutil.copy(second.certfile or "", live)
            server.reload_tls()
            assert await ping(server.url, app, TlsOptions(cafile=second_ca)) == Ping(7)
            with pytest.raises(TransportError, match="TLS handshake"):
                await ping(server.url, app, TlsOptions(cafile=first_ca))
            # The connection made before the reload is unaffected.
            await old.send(Ping(8))
            assert await within(old.receive()) == Ping(8)
            old.close()
            await old.wait_closed()
            # Explicit options work too, and a broken file keeps the server as it was.
            server.reload_tls(first)
            assert await ping(server.url, app, TlsOptions(cafile=first_ca)) == Ping(7)
            with pytest.raises(ConfigError, match="missing"):
                server.reload_tls(TlsOptions(certfile=str(tmp_path / "missing.pem")))
            assert await ping(server.url, app, TlsOptions(cafile=first_ca)) == Ping(7)

    run(main())


def test_reload_tls_on_a_plain_server_is_a_config_error() -> None:
    app = tls_app()

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            with pytest.raises(ConfigError, match="not a tls:// or wss:// server"):
                server.reload_tls()

    run(main())


def test_a_peer_that_sends_nothing_on_a_tls_port_is_cut_off(tls_files: TlsFiles) -> None:
    app = tls_app()

    async def main() -> None:
        limits = Limits(handshake_timeout=0.2)
        async with await app.start(
            "tls://127.0.0.1:0", tls=tls_files.server_options(), limits=limits
        ) as server:
            plain = server.url.replace("tls://", "tcp://")
            with tcp_socket(plain) as sock, contextlib.suppress(ConnectionResetError):
                received = await within(asyncio.get_running_loop().sock_recv(sock, 1024))
                assert received == b""
            assert server.handshake_failures == 1

    run(main())
