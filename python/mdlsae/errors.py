"""The one exception type users see: something they can fix (bad input, a damaged file, a
mismatched SAE). The CLI prints its message as a single line and exits non-zero."""

from __future__ import annotations


class MdlsaeError(Exception):
    """Bad input or damaged data, with a message that says what was expected and what was received."""


def expect(cond: bool, message: str) -> None:
    """Raise :class:`MdlsaeError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise MdlsaeError(message)
