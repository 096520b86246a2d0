"""Helpers shared by the sans-I/O core tests (framing, codecs, pipeline).

No sockets and no event loop: every helper feeds bytes and looks at values.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import settings

from framework import Delimited, Framing, FramingError

__all__ = ["at_most", "events", "feed_all"]


def at_most(max_examples: int) -> settings:
    """The active Hypothesis profile, with at most ``max_examples`` examples.

    For the laws that build large inputs: the ``ci`` profile searches harder
    everywhere else, but a handful of slow laws should not dominate the run.
    """
    return settings(max_examples=min(max_examples, settings.default.max_examples))


def feed_all(framing: Framing, chunks: Iterable[bytes]) -> list[bytes]:
    """Feed ``chunks`` to a fresh decoder, end the stream, return every frame."""
    decoder = framing.decoder()
    frames: list[bytes] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    decoder.end()
    return frames


def _recovers(framing: Framing, error: FramingError) -> bool:
    # Only Delimited(on_oversize="skip") documents a way to go on after an error.
    return (
        isinstance(framing, Delimited)
        and framing.on_oversize == "skip"
        and type(error).__name__ == "FrameTooLarge"
    )


def events(framing: Framing, chunks: Iterable[bytes]) -> list[bytes | str]:
    """What a decoder reports for ``chunks``: frames, and error class names in place.

    A framing whose decoder recovers from an error is fed ``b""`` after it, as
    its documentation says, so the frames that followed the bad one are kept.
    The result must not depend on how the stream was cut into chunks.
    """
    decoder = framing.decoder()
    seen: list[bytes | str] = []
    pending = list(chunks)
    while pending:
        chunk = pending.pop(0)
        try:
            seen += decoder.feed(chunk)
        except FramingError as exc:
            seen += exc.decoded
            seen.append(type(exc).__name__)
            if not _recovers(framing, exc):
                return seen
            pending.insert(0, b"")
    try:
        decoder.end()
    except FramingError as exc:
        seen.append("end: " + type(exc).__name__)
    return seen
