"""Range checks for settings: each failure names the key, the value and what is allowed."""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from ..errors import ConfigError


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config error: {key}={value!r} is out of range: expected {expected}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(key: str, value: Any) -> None:
    check(_finite(value) and value > 0, key, value, "a finite number > 0")


def non_negative(key: str, value: Any) -> None:
    check(_finite(value) and value >= 0, key, value, "a finite number >= 0")


def in_range(key: str, value: Any, low: float, high: float, what: str = "a number") -> None:
    check(_finite(value) and low <= value <= high, key, value, f"{what} in [{low:g}, {high:g}]")


def at_least(key: str, value: Any, minimum: int) -> None:
    check(value >= minimum, key, value, f"an integer >= {minimum}")


def optional_at_least(key: str, value: Optional[int], minimum: int) -> None:
    if value is not None:
        check(value >= minimum, key, value, f"null or an integer >= {minimum}")


def block_indices(key: str, values: Iterable[int], depth: int) -> None:
    """Indices of blocks whose output a method reads: the last block is rebuilt, so [0, depth - 2]."""
    values = list(values)
    check(all(0 <= v <= depth - 2 for v in values), key, values[0] if len(values) == 1 else values,
          f"block indices in [0, {depth - 2}] for this {depth}-block backbone (the last block is rebuilt)")


def optional_sha256(key: str, value: Optional[str]) -> None:
    if value is not None:
        digest = str(value)
        check(len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest), key, digest,
              "64 hexadecimal digits (or null)")
