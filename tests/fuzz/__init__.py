"""Coverage-guided fuzzing of wirekit with atheris (libFuzzer).

Each target is a function over bytes (``Target.one_input``) that feeds the
input to a framer, a codec, the typed-message decoder, a whole pipeline or a
whole server on the in-memory transport, and checks the invariants: any input
decodes or raises a documented wirekit error, buffers stay within their
limits, decoded values survive a re-encode, and the result does not depend on
how the bytes were split into chunks. Anything else raises, which is a crash.

Run it with ``python -m tests.fuzz TARGET|all --seconds N`` (see
``docs/howto/fuzzing.md``). Importing this package imports nothing from
``framework``: the runner's child process must instrument ``framework``
before its first import.
"""
