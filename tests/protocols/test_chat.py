"""Chat over TCP, driven the way nc or telnet would: raw lines on a plain socket."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable

import pytest

from framework import ConfigError
from protocols.chat import MAX_LINE, create_app

STEP = 3.0


class Peer:
    """A line-oriented TCP client, as a terminal user would be."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Peer:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def line(self) -> str:
        data = await asyncio.wait_for(self.reader.readline(), STEP)
        assert data.endswith(b"\n"), f"connection ended: {data!r}"
        return data.decode().rstrip("\n")

    async def until(self, wanted: str) -> str:
        """Read lines, skipping notices (``* ...``), until one containing ``wanted``."""
        while True:
            line = await self.line()
            if wanted in line:
                return line
            assert line.startswith("* "), f"expected a notice, got {line!r}"

    async def say(self, text: str | bytes, *, end: bytes = b"\r\n") -> None:
        self.writer.write((text.encode() if isinstance(text, str) else text) + end)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def run(scenario: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await create_app().start("tcp://127.0.0.1:0")
        try:
            await asyncio.wait_for(scenario(server.url), 20)
        finally:
            await server.close()

    asyncio.run(main())


async def joined(url: str) -> Peer:
    peer = await Peer.open(url)
    assert (await peer.line()).startswith("* welcome, guest-")
    return peer


def test_welcome_nick_and_broadcast_with_the_senders_name() -> None:
    async def scenario(url: str) -> None:
        ada = await joined(url)
        bob = await joined(url)
        assert (await ada.line()).endswith("joined #lobby")
        await ada.say("/nick ada")
        assert await ada.line() == "* you are now ada"
        assert (await bob.until("known as")).endswith("is now known as ada")
        await ada.say("hello, world")
        assert await bob.line() == "<ada> hello, world"
        await bob.say("/who")
        who = await bob.line()
        assert who.startswith("* in #lobby: ")
        assert "ada" in who
        await ada.close()
        assert await bob.line() == "* ada left #lobby"
        await bob.close()

    run(scenario)


def test_rooms_keep_conversations_apart() -> None:
    async def scenario(url: str) -> None:
        ada, bob, cy = [await joined(url) for _ in range(3)]
        await ada.say("/nick ada")
        assert await ada.until("you are now") == "* you are now ada"
        await ada.say("/join #games")
        assert await ada.until("you are in") == "* you are in #games"
        await cy.say("/join games")
        assert await cy.until("you are in") == "* you are in #games"
        assert await ada.line() == f"* {'guest-3'} joined #games"
        await ada.say("gg")
        assert await cy.line() == "<ada> gg"
        await bob.say("/who")
        who = await bob.until("* in #lobby")
        assert who == "* in #lobby: guest-2"
        assert not any("gg" in line for line in [who])
        for peer in (ada, bob, cy):
            await peer.close()

    run(scenario)


def test_errors_are_lines_back_and_the_session_goes_on() -> None:
    async def scenario(url: str) -> None:
        ada = await joined(url)
        await ada.say(b"caf\xe9 in latin-1")
        assert (await ada.line()).startswith("! not valid UTF-8")
        await ada.say(b"x" * (MAX_LINE * 3))
        assert await ada.line() == f"! line too long (over {MAX_LINE} bytes): ignored"
        await ada.say("/dance")
        assert (await ada.line()).startswith("! unknown command /dance")
        await ada.say("/nick no spaces allowed")
        assert (await ada.line()).startswith("! a nickname is")
        await ada.say("/who")
        assert (await ada.line()).startswith("* in #lobby: guest-")
        await ada.close()

    run(scenario)


def test_nick_must_be_unique() -> None:
    async def scenario(url: str) -> None:
        ada, bob = await joined(url), await joined(url)
        await ada.say("/nick ada")
        assert await ada.until("you are now") == "* you are now ada"
        await bob.say("/nick ada")
        assert await bob.until("taken") == "! ada is taken"
        await ada.close()
        await bob.close()

    run(scenario)


def test_quit_says_bye_and_closes() -> None:
    async def scenario(url: str) -> None:
        ada = await joined(url)
        await ada.say("/quit")
        assert await ada.line() == "* bye"
        assert await asyncio.wait_for(ada.reader.read(), STEP) == b""
        await ada.close()

    run(scenario)


@pytest.mark.timeout(60)
def test_a_client_that_stops_reading_is_dropped_and_does_not_slow_the_others() -> None:
    async def scenario(url: str) -> None:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        stuck = socket.create_connection((host, int(port)))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ada, bob = await joined(url), await joined(url)
        await ada.until("joined")  # bob joined
        text = "y" * 1000
        delivered = 0
        dropped = False
        try:
            # ~20 MB for the stuck client: past its socket buffers (the kernel
            # may grow a send buffer to a few MB) and the server's high-water mark.
            for n in range(20_000):
                await ada.say(f"{n} {text}")
                line = await bob.line()
                while line.endswith("left #lobby"):
                    dropped = True
                    line = await bob.line()
                assert line.endswith(f"> {n} {text}"), "bob missed a message"
                delivered += 1
                if dropped:
                    break
        finally:
            stuck.close()
        assert dropped, "the client that never reads was not disconnected"
        assert delivered > 0
        await ada.close()
        await bob.close()

    run(scenario)


# -- two nodes: two servers on one backplane ----------------------------------------------

_hubs = itertools.count(1)


def run_two(scenario: Callable[[str, str], Awaitable[None]]) -> None:
    """Two chat servers on different ports, one memory:// hub: two nodes of one chat."""

    async def main() -> None:
        hub = f"memory://chat-nodes-{next(_hubs)}"
        first = await create_app(backplane=hub).start("tcp://127.0.0.1:0")
        second = await create_app(backplane=hub).start("tcp://127.0.0.1:0")
        try:
            await asyncio.wait_for(scenario(first.url, second.url), 20)
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())


async def who(peer: Peer, expected: str) -> None:
    """Ask /who until it says ``expected`` (presence crosses nodes in a round trip)."""
    for _ in range(100):
        await peer.say("/who")
        line = await peer.until("* in #")
        if line == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"/who never said {expected!r}; last: {line!r}")


def test_rooms_who_and_announcements_span_two_nodes() -> None:
    async def scenario(one: str, two: str) -> None:
        ada = await joined(one)
        await ada.say("/nick ada")
        assert await ada.until("you are now") == "* you are now ada"
        bob = await Peer.open(two)
        welcome = await bob.line()
        assert welcome.startswith("* welcome, guest-")
        assert (await ada.until("joined #lobby")).endswith("joined #lobby")
        await bob.say("/nick bob")
        assert await ada.until("known as") == f"* {welcome.split()[2][:-1]} is now known as bob"
        await who(ada, "* in #lobby: ada, bob")
        await who(bob, "* in #lobby: ada, bob")

        await bob.say("hello from node two")
        assert await ada.line() == "<bob> hello from node two"
        await ada.say("hello from node one")
        assert await bob.line() == "<ada> hello from node one"

        await bob.say("/nick ada")  # taken on the other node
        assert await bob.until("taken") == "! ada is taken"

        await ada.say("/join #dev")
        assert await ada.until("you are in") == "* you are in #dev"
        assert await bob.until("left") == "* ada left #lobby"
        await who(bob, "* in #lobby: bob")
        await bob.say("/join dev")
        assert await ada.until("joined") == "* bob joined #dev"
        await bob.close()
        assert await ada.until("left") == "* bob left #dev"
        await who(ada, "* in #dev: ada")
        await ada.close()

    run_two(scenario)


def test_guest_names_are_not_given_twice_across_nodes() -> None:
    async def scenario(one: str, two: str) -> None:
        peers = []
        names = set()
        for url in (one, two, one, two):
            await asyncio.sleep(0.05)  # presence of the previous guest has crossed
            peer = await Peer.open(url)
            names.add((await peer.line()).split()[2])
            peers.append(peer)
        assert len(names) == 4, names
        for peer in peers:
            await peer.close()

    run_two(scenario)


def test_serving_the_chat_from_two_workers_needs_a_backplane() -> None:
    app = create_app()
    assert app.uses_groups
    with pytest.raises(ConfigError, match="--backplane"):
        app.check_workers(2)
