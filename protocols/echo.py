"""Echo: every value received is sent straight back.

Works with any framing and codec (the config or the command line picks them;
length-prefix + msgpack by default). It is the first protocol to try, and the
reference server of the benchmarks::

    wirekit serve protocols.echo --url tcp://127.0.0.1:9000
    wirekit send tcp://127.0.0.1:9000 '{"hello": "world"}'
"""

from __future__ import annotations

from typing import Any

from framework import App, Pipeline

app = App(Pipeline(framing="length-prefix", codecs="msgpack"), default_url="tcp://127.0.0.1:9000")


@app.on(object)
def echo(value: Any, conn: Any) -> Any:
    """Reply with the value itself."""
    if value is None:
        # A handler's None return means "no reply", so nil is sent explicitly;
        # send_nowait keeps it in order with the replies around it.
        conn.send_nowait(None)
    return value
