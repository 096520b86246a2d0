"""Shared test configuration: Hypothesis profiles.

``dev`` (the default) keeps the suite quick; ``ci`` (chosen when ``CI`` is
set, or with ``HYPOTHESIS_PROFILE=ci``) searches harder. Neither has a
deadline: timing belongs in benchmarks/, not in tests.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# WIREKIT_TEST_LOOP=uvloop runs every asyncio.run of the suite on uvloop, the
# loop wirekit picks when it is installed; CI runs the runtime tests that way too.
if os.environ.get("WIREKIT_TEST_LOOP") == "uvloop":
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
