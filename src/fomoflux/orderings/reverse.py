"""Any ordering backwards (the reference's ``*_reverse_1`` streams)."""

from __future__ import annotations

from collections.abc import Sequence


def reverse(entries: Sequence[str]) -> list[str]:
    """The entries in reverse order (the paper's ``*_reverse`` streams)."""
    return list(reversed(entries))
