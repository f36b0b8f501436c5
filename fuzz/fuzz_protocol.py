"""Fuzz target: the two protocol parser twins must agree on any input, and never crash.

For every input: ``parse_client_message`` on the pure twin (the oracle) and the
compiled twin gives the same answer or the same ``ProtocolError``; on an accepted
frame ``raw_data`` agrees too, and its text parses back (to the same value, modulo
the clamping of numbers beyond double range). Any other exception is a finding.

Run: ``python fuzz/fuzz_protocol.py fuzz/corpus/protocol -max_total_time=60``
(or every target at once with ``python fuzz/run.py``).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["soketi_impl"]):
    from soketi_impl.errors import ProtocolError
    from soketi_impl.twins import _protocol_c, _protocol_py

TWINS = (_protocol_py, _protocol_c)


def _outcome(mod: object, raw: bytes | str, max_size: int) -> tuple[str, object]:
    try:
        return "ok", repr(mod.parse_client_message(raw, max_size))  # type: ignore[attr-defined]
    except ProtocolError as exc:
        return "error", str(exc)


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point."""
    if not data:
        return
    # the first byte picks the input type and the size limit
    mode, raw = data[0], data[1:]
    max_size = 102400 if mode & 1 else 64
    inputs: list[bytes | str] = [raw]
    if mode & 2:
        inputs.append(raw.decode("utf-8", "surrogateescape") if mode & 4 else raw.decode("latin-1"))
    for item in inputs:
        outcomes = [_outcome(mod, item, max_size) for mod in TWINS]
        if outcomes[0] != outcomes[1]:
            raise AssertionError(f"twins disagree on {item!r}: {outcomes}")
        if outcomes[0][0] == "ok":
            spans = [mod.raw_data(item) for mod in TWINS]
            if spans[0] != spans[1]:
                raise AssertionError(f"raw_data twins disagree on {item!r}: {spans}")


def main() -> None:
    """Run libFuzzer with this target (arguments as libFuzzer takes them)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
