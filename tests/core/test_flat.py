"""The one place wirekit reads attrs' generated code: it must fail loudly if attrs changes.

``attrs_init_sets_only`` decides whether a flat message can be built
without calling its ``__init__``. attrs documents no API that says what its
generated ``__init__`` does, so it reads the compiled code; if a new attrs
compiles it differently, the first test here fails (and flat messages only
lose a speed-up meanwhile: they are built by calling the class).
"""

from __future__ import annotations

from typing import Any

import attrs

from framework.core._flat import MISS, attrs_init_sets_only, flat_decoder


@attrs.frozen
class Plain:
    x: float
    n: int


def names(cls: type) -> set[str]:
    return {field.name for field in attrs.fields(cls)}  # type: ignore[misc]


def test_attrs_still_generates_an_init_that_only_sets_the_fields() -> None:
    assert attrs_init_sets_only(Plain, names(Plain)), (
        f"attrs {attrs.__version__} compiles a frozen class's __init__ differently: "
        "update framework.core._flat.attrs_init_sets_only"
    )


def test_an_init_that_does_more_than_set_the_fields_is_refused() -> None:
    @attrs.frozen
    class Validated:
        x: float = attrs.field(validator=attrs.validators.instance_of(float))

    @attrs.frozen
    class Converted:
        x: float = attrs.field(converter=float)

    @attrs.frozen
    class Hooked:
        x: float

        def __attrs_post_init__(self) -> None:
            pass

    @attrs.frozen(init=False)
    class Handwritten:
        x: float

        def __init__(self, x: float) -> None:
            object.__setattr__(self, "x", x)

    for cls in (Validated, Converted, Hooked, Handwritten):
        assert not attrs_init_sets_only(cls, names(cls)), cls.__name__


def test_a_class_that_is_not_attrs_is_refused() -> None:
    class Bare:
        def __init__(self, x: float) -> None:
            self.x = x

    assert not attrs_init_sets_only(Bare, {"x"})


def test_a_flat_decoder_builds_the_same_instance_as_the_class() -> None:
    attrs.resolve_types(Plain)  # this module's annotations are strings
    decode: Any = flat_decoder(Plain)
    assert decode({"type": "plain", "x": 1.5, "n": 2}) == Plain(1.5, 2)
    assert decode({"type": "plain", "x": 1, "n": 2}) == Plain(1.0, 2)
    assert decode({"type": "plain", "x": "1", "n": 2}) is MISS
    assert decode({"type": "plain", "x": 1.5}) is MISS
