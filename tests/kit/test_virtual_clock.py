"""The virtual clock: timers fire at once in real time, at the right virtual time, in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from framework.testing import VirtualClockLoop, VirtualClockPolicy, run_virtual


def test_an_hour_of_sleep_takes_no_real_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    started = time.perf_counter()
    assert run_virtual(main()) == 3600
    # Generous: a real sleep would take an hour; this is one loop iteration.
    assert time.perf_counter() - started < 1.0


def test_timers_fire_in_order_at_their_virtual_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        done = loop.create_future()
        for name, delay in [("c", 30.0), ("a", 0.5), ("d", 30.0), ("b", 7.25)]:
            loop.call_later(delay, lambda name=name: fired.append((name, loop.time())))
        loop.call_later(31, done.set_result, None)
        await done
        return fired

    assert run_virtual(main()) == [("a", 0.5), ("b", 7.25), ("c", 30.0), ("d", 30.0)]


def test_timers_due_at_the_same_time_fire_in_the_order_scheduled() -> None:
    # On a virtual clock equal deadlines are common (nothing moves between
    # two call_later calls); asyncio's heap alone would not keep their order.
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        for number in range(200):
            loop.call_later(5 if number % 3 else 1, fired.append, number)
        await asyncio.sleep(6)
        return fired

    ones = [n for n in range(200) if n % 3 == 0]
    fives = [n for n in range(200) if n % 3]
    assert run_virtual(main()) == ones + fives


def test_call_at_in_the_past_runs_at_once_without_moving_the_clock() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(100)
        ran = loop.create_future()
        loop.call_at(loop.time() - 50, lambda: ran.set_result(loop.time()))
        return await ran, loop.time()

    assert run_virtual(main()) == (100, 100)


def test_a_cancelled_timer_is_not_jumped_to() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(10, lambda: None).cancel()
        await asyncio.sleep(20)
        return loop.time()

    assert run_virtual(main()) == 20


def test_asyncio_timeout_and_wait_for_expire_at_the_virtual_deadline() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.sleep(3600)
        seen.append(loop.time())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.create_future(), 2.5)
        seen.append(loop.time())
        return seen

    assert run_virtual(main()) == [10, 12.5]


def test_a_deadlock_fails_at_its_timeout_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.wait_for(asyncio.Event().wait(), 600)

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        run_virtual(main())
    assert time.perf_counter() - started < 1.0


def test_waiting_for_what_can_never_happen_is_reported_not_hung() -> None:
    async def main() -> None:
        await asyncio.Event().wait()  # no timer, no socket, no thread: nothing can set it

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="deadlock"):
        run_virtual(main())
    assert time.perf_counter() - started < 1.0


def test_the_clock_stands_still_while_work_is_ready() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(1000):
            await asyncio.sleep(0)
        return loop.time() - start

    assert run_virtual(main()) == 0


def test_start_and_skipped() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        await asyncio.sleep(5)
        await asyncio.sleep(7)
        return loop.time(), loop.skipped

    assert run_virtual(main(), start=1000.0) == (1012.0, 12.0)


def test_a_thread_is_waited_for_in_real_time_not_outrun() -> None:
    # The thread finishes after a real 50 ms; a 10 s virtual timeout must
    # not fire first, as it would if the clock jumped while the thread ran.
    async def main() -> str:
        return await asyncio.wait_for(asyncio.to_thread(lambda: time.sleep(0.05) or "done"), 10)

    assert run_virtual(main()) == "done"


def test_name_resolution_in_a_thread_is_not_outrun() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo("localhost", 0), 1)
        return len(infos)

    assert run_virtual(main()) > 0


def test_real_loopback_sockets_work_under_the_virtual_clock() -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(b"hello")
        reply = await asyncio.wait_for(reader.readexactly(5), 5)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply

    assert run_virtual(main()) == b"hello"


def test_io_wait_gives_a_peer_in_another_thread_real_time_to_answer() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def slow_peer() -> None:
        conn, _ = listener.accept()
        with conn:
            time.sleep(0.05)  # a real delay, longer than one poll
            conn.sendall(b"late")

    thread = threading.Thread(target=slow_peer)
    thread.start()

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(reader.readexactly(4), 10)
        finally:
            writer.close()

    try:
        assert run_virtual(main(), io_wait=5.0) == b"late"
    finally:
        thread.join()
        listener.close()


def test_debug_mode_checks_callbacks_as_asyncio_does() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TypeError, match="coroutine"):
            loop.call_later(1, main)  # type: ignore[arg-type]
        await asyncio.sleep(2)
        return loop.time()

    assert run_virtual(main(), debug=True) == 2


def test_the_policy_makes_virtual_loops() -> None:
    policy = VirtualClockPolicy(start=50.0)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, VirtualClockLoop)
        assert loop.run_until_complete(asyncio.sleep(10, result="slept")) == "slept"
        assert loop.time() == 60.0
    finally:
        loop.close()
