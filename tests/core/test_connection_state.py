"""The stream connection's rules, driven by bytes and a number for the clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework import Delimited, LengthPrefix, Limits, Pipeline
from framework.core import _fast
from framework.core.connection import (
    BadInput,
    HandlerSlots,
    ReadPause,
    ReplyBatch,
    Role,
    StreamState,
    TimerDecision,
)
from framework.core.errors import DecodeError, FrameTimeout, FrameTooLarge

LINES = Pipeline(framing=Delimited(), codecs="utf-8")
RAW = Pipeline(framing=LengthPrefix(), codecs="bytes")
#: A line utf-8 can encode (no lone surrogates) and the newline framing can carry.
LINE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20)


def state(
    pipeline: Pipeline = LINES,
    *,
    role: Role = Role.SERVER,
    recover: bool = False,
    now: float = 0.0,
    **limits: object,
) -> StreamState:
    return StreamState(pipeline, role=role, limits=Limits(**limits), recover=recover, now=now)


# -- bytes in --------------------------------------------------------------------


@given(
    lines=st.lists(LINE, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_values_do_not_depend_on_how_the_bytes_are_cut(lines: list[str], cuts: list[int]) -> None:
    wire = b"".join(line.encode() + b"\n" for line in lines)
    conn = state()
    got: list[object] = []
    start = 0
    for cut in [*sorted({min(c, len(wire)) for c in cuts}), len(wire)]:
        got += conn.receive_data(wire[start:cut], now=1.0)
        start = cut
    assert got == lines
    assert conn.buffered == 0


def test_a_bad_frame_is_bad_input_in_its_place_when_the_stream_can_recover() -> None:
    conn = state(recover=True)
    values = conn.receive_data(b"one\n\xff\ntwo\n", now=0.0)
    assert values[0] == "one"
    assert isinstance(values[1], BadInput)
    assert isinstance(values[1].error, DecodeError)
    assert not values[1].fatal
    assert values[2] == "two"
    assert conn.close_error is None


def test_without_recovery_the_first_bad_frame_ends_the_stream() -> None:
    conn = state(recover=False)
    values = conn.receive_data(b"one\n\xff\ntwo\n", now=0.0)
    assert values[0] == "one"
    assert values[1] == BadInput(values[1].error, fatal=True)
    assert len(values) == 2  # nothing after it is decoded
    assert conn.close_error is values[1].error


def test_a_framing_error_that_cannot_be_recovered_from_is_fatal_anyway() -> None:
    conn = state(RAW, recover=True)
    header_of_4gib = b"\xff\xff\xff\xff"
    values = conn.receive_data(b"\x00\x00\x00\x02hi" + header_of_4gib, now=0.0)
    assert values[0] == b"hi"
    bad = values[1]
    assert isinstance(bad, BadInput)
    assert isinstance(bad.error, FrameTooLarge)
    assert bad.fatal


def test_a_skipped_over_long_line_costs_only_itself() -> None:
    pipeline = Pipeline(framing=Delimited(max_frame_size=8, on_oversize="skip"), codecs="utf-8")
    conn = state(pipeline, recover=True)
    values = conn.receive_data(b"ok\n" + b"x" * 20 + b"\nafter\n", now=0.0)
    assert values[0] == "ok"
    assert isinstance(values[1], BadInput)
    assert not values[1].fatal
    assert values[2:] == ["after"]


def test_end_of_stream_mid_frame_is_reported() -> None:
    conn = state()
    assert conn.receive_data(b"half a li", now=0.0) == []
    error = conn.receive_eof()
    assert error is not None
    assert state().receive_eof() is None


def test_values_from_a_raw_stack_are_its_frames() -> None:
    conn = state(RAW)
    assert conn.receive_data(RAW.encode_many([b"a", b"", b"bc"]), now=0.0) == [b"a", b"", b"bc"]


# -- reading paused, and why --------------------------------------------------------


def test_reading_pauses_on_the_first_reason_and_resumes_when_none_is_left() -> None:
    conn = state()
    assert conn.pause(ReadPause.WRITES_BACKED_UP)  # the transport must pause now
    assert not conn.pause(ReadPause.HANDLERS_BUSY)  # already paused
    assert not conn.resume(ReadPause.WRITES_BACKED_UP)  # still busy
    assert not conn.resume(ReadPause.INBOX_FULL)  # not a reason it had
    assert conn.resume(ReadPause.HANDLERS_BUSY)  # none left: resume now
    assert conn.paused == ReadPause(0)


# -- deadlines -------------------------------------------------------------------


def test_a_peer_that_sends_nothing_for_idle_timeout_is_closed_then_aborted() -> None:
    conn = state(idle_timeout=10.0, frame_timeout=None)
    assert conn.wakeup_at == 10.0
    conn.receive_data(b"hello\n", now=4.0)
    assert conn.on_timer(10.0) is TimerDecision.NOTHING  # active at 4: due at 14
    assert conn.wakeup_at == 14.0
    assert conn.on_timer(14.0) is TimerDecision.IDLE
    conn.start_closing(14.0)
    # Closing: the peer has another idle period to read what we flush.
    assert conn.wakeup_at == 24.0
    assert conn.on_timer(24.0) is TimerDecision.ABORT


def test_a_frame_left_unfinished_for_frame_timeout_closes_with_frame_timeout() -> None:
    conn = state(idle_timeout=None, frame_timeout=5.0)
    assert conn.wakeup_at is None
    conn.receive_data(b"star", now=1.0)
    assert conn.wakeup_at == 6.0
    conn.receive_data(b"ted but", now=3.0)  # a trickle does not restart the clock
    assert conn.on_timer(6.0) is TimerDecision.FRAME_TIMEOUT
    error = conn.close_error
    assert isinstance(error, FrameTimeout)
    assert error.buffered == len(b"started but")
    assert conn.buffered == 0  # what the peer made us hold is freed at once


def test_completing_frames_restarts_the_frame_clock() -> None:
    conn = state(idle_timeout=None, frame_timeout=5.0)
    conn.receive_data(b"par", now=0.0)
    conn.receive_data(b"tial\nnext", now=4.0)  # a frame completed: the next starts at 4
    assert conn.on_timer(5.0) is TimerDecision.NOTHING
    assert conn.wakeup_at == 9.0
    conn.receive_data(b"\n", now=8.0)  # finished: nothing unfinished
    assert conn.on_timer(9.0) is TimerDecision.NOTHING
    assert conn.wakeup_at is None


def test_the_frame_clock_restarts_while_we_are_not_reading() -> None:
    conn = state(idle_timeout=None, frame_timeout=5.0)
    conn.receive_data(b"part", now=0.0)
    conn.pause(ReadPause.HANDLERS_BUSY)
    assert conn.on_timer(5.0) is TimerDecision.NOTHING  # our pause, not the peer's fault
    assert conn.wakeup_at == 10.0


def test_a_peer_over_its_frame_rate_pauses_reading_until_it_is_paid_for() -> None:
    conn = state(idle_timeout=None, max_frames_per_second=10.0, frame_burst=10)
    conn.receive_data(b"x\n" * 10, now=0.0)
    assert conn.paused == ReadPause(0)  # within the burst
    conn.receive_data(b"x\n" * 5, now=0.0)
    assert conn.paused == ReadPause.RATE_LIMITED
    assert conn.stats.rate_limited == 1
    assert conn.wakeup_at == pytest.approx(0.5)
    assert conn.on_timer(0.4) is TimerDecision.NOTHING
    assert conn.on_timer(0.5) is TimerDecision.RESUME
    assert conn.paused == ReadPause(0)


def test_a_client_sets_no_limit_on_the_server_it_chose() -> None:
    conn = state(role=Role.CLIENT, idle_timeout=1.0, frame_timeout=1.0, max_frames_per_second=1.0)
    conn.receive_data(b"x\n" * 100 + b"partial", now=0.0)
    assert conn.paused == ReadPause(0)
    assert conn.wakeup_at is None


# -- replies -----------------------------------------------------------------------


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_a_framed_batch_writes_what_the_pipeline_would(replies: list[bytes]) -> None:
    batch = ReplyBatch(RAW)
    assert batch.framed
    for reply in replies:
        assert batch.add(reply) == []
    assert len(batch) == len(replies)
    assert batch.take() == (RAW.encode_many(replies), len(replies), [])
    assert len(batch) == 0


@given(st.lists(LINE, max_size=20))
def test_a_batch_of_values_writes_what_the_pipeline_would(replies: list[str]) -> None:
    batch = ReplyBatch(LINES)
    assert not batch.framed
    for reply in replies:
        batch.add(reply)
    assert batch.take() == (LINES.encode_many(replies), len(replies), [])


@pytest.mark.parametrize("pipeline", [RAW, LINES], ids=["framed", "values"])
def test_a_reply_that_cannot_be_encoded_costs_only_itself(pipeline: Pipeline) -> None:
    good = b"fine" if pipeline is RAW else "fine"
    batch = ReplyBatch(pipeline)
    failed = []
    for reply in [good, 12345, good]:
        failed += batch.add(reply)
    out, count, more = batch.take()
    assert out == pipeline.encode_many([good, good])
    assert count == 2
    assert len(failed) + len(more) == 1


class _Text(str):
    """A str subclass: the utf-8 codec refuses it."""


#: Replies a text handler may return: lines, lines the newline cannot carry
#: or utf-8 cannot encode, a str subclass, and other classes.
TEXT_REPLIES = st.one_of(
    LINE,
    st.sampled_from(["a\nb", "cr\r", "\ud800", "é" * 30, ""]),
    LINE.map(_Text),
    st.binary(max_size=5),
    st.integers(),
)


@given(st.lists(TEXT_REPLIES, max_size=20), st.booleans())
def test_a_text_batch_writes_what_the_batch_of_values_would(
    replies: list[object], twice: bool
) -> None:
    # The dispatch loop appends an exact str to a text batch itself and
    # hands it anything else: the bytes, count and failures are those of the
    # reference batch (no speed-ups), value by value.
    with _fast.only():
        reference = ReplyBatch(Pipeline(framing=Delimited(max_frame_size=40), codecs="utf-8"))
    batch = ReplyBatch(Pipeline(framing=Delimited(max_frame_size=40), codecs="utf-8"))
    assert batch.text
    assert not reference.text
    for _ in range(2 if twice else 1):  # a mixed batch leaves the next one text again
        failed: list[object] = []
        for reply in replies:
            if type(reply) is str:
                batch.chunks.append(reply)
            else:
                failed += batch.add(reply)
            reference.add(reply)
        out, count, more = batch.take()
        want, want_count, want_failed = reference.take()
        assert (out, count) == (want, want_count)
        assert [(v, type(e)) for v, e in more] == [(v, type(e)) for v, e in want_failed]
        assert failed == []
        assert batch.chunks == []
        replies = [r for r in replies if type(r) is str]


def test_only_a_utf8_stack_under_a_newline_has_a_text_batch() -> None:
    assert ReplyBatch(LINES).text
    for pipeline in (
        RAW,
        Pipeline(framing=LengthPrefix(), codecs="utf-8"),
        Pipeline(framing=Delimited(), codecs="json"),
        Pipeline(framing=Delimited(delimiter=b"\r\n"), codecs="utf-8"),
    ):
        assert not ReplyBatch(pipeline).text


@given(
    lines=st.lists(st.binary(max_size=8) | LINE.map(str.encode), max_size=12),
    recover=st.booleans(),
)
def test_a_read_is_uniform_only_when_every_value_is_the_decoders_class(
    lines: list[bytes], recover: bool
) -> None:
    # The decoder of a utf-8 stack promises exact str values; a read that
    # met bad input holds BadInput too, and says so.
    conn = state(recover=recover)
    wire = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    values = conn.receive_data(wire, now=0.0)
    if conn.uniform:
        assert all(type(value) is str for value in values)
    else:
        assert any(type(value) is BadInput for value in values)
    raw = state(RAW)
    raw.receive_data(RAW.encode_many([b"a", b"b"]), now=0.0)
    assert not raw.uniform  # a raw stack's decoder promises nothing


def test_taking_empties_the_batch_in_place() -> None:
    batch = ReplyBatch(LINES)
    chunks = batch.chunks
    batch.add("a")
    batch.take()
    assert batch.chunks is chunks  # a dispatch loop may hold it
    assert chunks == []


# -- stream and datagram agree ---------------------------------------------------------


@given(st.lists(st.binary(max_size=30), max_size=20))
def test_the_stream_and_datagram_paths_give_the_same_values(frames: list[bytes]) -> None:
    pipeline = Pipeline(framing=LengthPrefix(), codecs="bytes")
    streamed = state(pipeline).receive_data(pipeline.encode_many(frames), now=0.0)
    datagrams = [v for f in frames for v in pipeline.decode_datagram(pipeline.encode_datagram(f))]
    assert streamed == datagrams == frames


# -- handlers in flight -------------------------------------------------------------


def test_the_last_free_slot_pauses_reading_and_half_free_releases_what_was_held() -> None:
    slots = HandlerSlots(4)
    assert [slots.started() for _ in range(4)] == [False, False, False, True]
    assert slots.full
    slots.held.extend(["a", "b"])
    assert not slots.finished()  # 3 running: more than half the slots
    assert slots.finished()  # 2 of 4: the held values may go
    assert not slots.full
    assert list(slots.held) == ["a", "b"]


def test_recovery_is_decided_at_each_bad_frame_when_asked_by_a_callable() -> None:
    fallback = False
    conn = StreamState(LINES, role=Role.SERVER, limits=Limits(), recover=lambda: fallback, now=0.0)
    fallback = True  # a fallback registered after the connection opened
    values = conn.receive_data(b"\xff\nok\n", now=0.0)
    assert isinstance(values[0], BadInput)
    assert not values[0].fatal
    assert values[1:] == ["ok"]
