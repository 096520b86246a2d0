"""The sans-I/O core: everything that turns bytes into values and back.

Framings, codecs, typed messages, the pipeline, errors, limits, the router's
table, endpoint parsing, security stages and the connection state machine.
Nothing here imports ``asyncio``, ``socket``, ``ssl``, ``selectors`` or
``threading``: the core is driven by bytes and a number for the clock, and the
runtime (:mod:`framework.runtime`) moves those between it and the network.
"""
