"""Small arithmetic helpers of the architecture papers."""

from __future__ import annotations

__all__ = ["make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without going more than 10 % below it.

    The rule of the MobileNet reference code (and torchvision's ``_make_divisible``): channel
    counts scaled by a width multiplier stay multiples of 8, which the hardware kernels prefer.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new
