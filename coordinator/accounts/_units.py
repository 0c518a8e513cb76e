"""Amounts in human units ("10", "0.5 AI") to and from base units (18 decimals).

Exact integer arithmetic only, no floats and no Decimal context to run out of
precision: an amount that does not fit in base units is an error, never a rounding.
"""

from __future__ import annotations

import re

from coordinator.accounts._errors import AmountError

__all__ = ["DECIMALS", "format_amount", "parse_amount"]

DECIMALS = 18
_ONE = 10**DECIMALS
_AMOUNT = re.compile(r"^\s*(?P<number>[-+]?[0-9_.]+)\s*(?P<unit>[A-Za-z]*)\s*$")


def parse_amount(text: str, unit: str = "AI") -> int:
    """Read ``text`` ("10", "0.5", "0.5 AI") as base units of ``unit``, which has 18 decimals.

    A unit written after the number must be ``unit`` (any case), so "1 ETH"
    is refused where AI is meant.
    """
    m = _AMOUNT.match(text)
    if m is None:
        raise AmountError(
            f"{text!r} is not an amount; write a decimal number of {unit}, e.g. '10' or '0.5 {unit}'"
        )
    written = m["unit"]
    if written and written.upper() != unit.upper():
        raise AmountError(
            f"{text!r} is in {written}, but this amount is in {unit}; write e.g. '0.5 {unit}'"
        )
    number = m["number"].replace("_", "")
    sign, number = (number[0], number[1:]) if number[:1] in ("+", "-") else ("", number)
    whole, _, frac = number.partition(".")
    if not (whole + frac).isdigit():
        raise AmountError(
            f"{text!r} is not an amount; write a decimal number of {unit}, e.g. '10' or '0.5 {unit}'"
        )
    if sign == "-":
        raise AmountError(f"{text!r} is negative; an amount of {unit} is 0 or more")
    if frac[DECIMALS:].strip("0"):
        raise AmountError(
            f"{text!r} has more than {DECIMALS} decimals; {unit} is divisible to 1e-{DECIMALS} only"
        )
    return int(whole or "0") * _ONE + int(frac[:DECIMALS].ljust(DECIMALS, "0"))


def format_amount(base_units: int, unit: str = "AI") -> str:
    """Write ``base_units`` of an 18-decimal token exactly, without trailing zeros: '0.5 AI'."""
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), _ONE)
    text = f"{sign}{whole}"
    if frac:
        text += "." + f"{frac:0{DECIMALS}d}".rstrip("0")
    return f"{text} {unit}" if unit else text
