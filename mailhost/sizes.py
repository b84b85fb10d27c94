"""Human sizes (`500M`, `2G`) for quotas on the command line and in forms."""

import re

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"size {text!r} is not a number with an optional K, M, G or T suffix")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % (_UNITS[unit] // 1024 or 1) == 0:
            value = n / _UNITS[unit]
            return f"{value:.1f}{unit}".replace(".0", "")
    return f"{n}B"
