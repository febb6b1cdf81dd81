"""Validation of numeric Oracle settings, shared by the Oracles."""


def check_settings(checks):
    """Raises a ValueError for the first setting whose check failed.

    Args:
        checks: iterable of `(name, value, ok, expected)`: the setting's name and value,
            whether it is valid, and the expected range in words (e.g. ">= 1").

    Raises:
        ValueError: naming the setting, its value and the expected range.
    """
    for name, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name}={value!r}: expected a value {expected}")
