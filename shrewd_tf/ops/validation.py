"""Argument checks shared by the library (no TF, no models).

`check_positive_int` is the one validator for counts and sizes: k, bits,
block sizes, class counts, cut-off ranks.
"""

import numpy as np


def check_positive_int(name, value, allow_none=False):
    """Returns `value` as an int >= 1, or raises ValueError naming `name`.

    Python and NumPy integers are accepted; bools, floats (even 8.0) and
    strings are not.

    Args:
        name: the argument's name, quoted in the error.
        value: the value to check.
        allow_none: return None for `value=None` instead of raising.

    Returns:
        int, or None when `allow_none` and `value` is None.

    Raises:
        ValueError: `value` is not an integer >= 1. The message quotes it:
            f"... Received: {name}={value!r}".
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)
