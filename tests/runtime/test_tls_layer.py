"""The asyncio internals wirekit's TLS layer relies on are still there.

``framework.runtime.transports.tls_layer`` is the one module that uses
``asyncio.sslproto``'s private names (asyncio has no public way to run TLS
over a transport that already exists). A Python release that renames or
drops one of them fails here, naming it, before any TLS test fails in a
less obvious way.
"""

from __future__ import annotations

import ast
import sys
from asyncio import sslproto
from pathlib import Path

import pytest

from framework.runtime.transports import tls_layer

FRAMEWORK = Path(__file__).resolve().parents[2] / "framework"


def test_asyncio_still_has_every_sslproto_internal_the_tls_layer_uses() -> None:
    missing = tls_layer.missing_internals()
    assert not missing, (
        f"Python {sys.version.split()[0]} changed asyncio's TLS internals: "
        f"{', '.join(missing)} no longer exist. framework/runtime/transports/tls_layer.py "
        "relies on them (see its INTERNALS); adapt it to this asyncio."
    )


def test_the_check_notices_a_missing_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sslproto.SSLProtocol, "_start_shutdown")
    assert "asyncio.sslproto.SSLProtocol._start_shutdown" in tls_layer.missing_internals()


def test_the_private_names_the_tls_layer_uses_are_all_listed() -> None:
    """Every ``self._x``/``tls._x`` the module reads off asyncio's class is in INTERNALS."""
    source = Path(tls_layer.__file__).read_text(encoding="utf-8")
    ours = {"_tls", "_close_began", "_delivered", "_stop_shutdown_timer"}
    used = {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in ours
    }
    unlisted = used - set(tls_layer.INTERNALS["SSLProtocol"])
    assert not unlisted, f"add {sorted(unlisted)} to tls_layer.INTERNALS"


def test_no_other_module_touches_sslproto() -> None:
    users = [
        path.relative_to(FRAMEWORK.parent)
        for path in FRAMEWORK.rglob("*.py")
        if "sslproto" in path.read_text(encoding="utf-8") and path.name != "tls_layer.py"
    ]
    assert users == []
