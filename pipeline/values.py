"""Lenient conversion of a value an extractor stated to its column type: convert only what is unambiguous."""

from __future__ import annotations

import datetime
import math
import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from contracts import FieldDefinition, FieldValue

# Sign, then digits grouped by thousands (comma or space), a decimal point or an exponent, then at most one
# short unit ("12 %", "12 bar", "5 mg/L"). Ranges, "about 12", "<5" and several numbers do not match.
_NUMBER = re.compile(
    r"(?P<sign>[-+\u2212])?"
    r"(?P<digits>\d{1,3}(?:(?P<sep>[, \u00a0\u2009\u202f])\d{3})(?:(?P=sep)\d{3})*|\d+)"
    r"(?:,(?P<decimal_comma>\d{1,2})|(?P<fraction>\.\d+)?(?P<exponent>[eE][-+]?\d+)?)"
    r"(?:\s?(?:%|°?[^\W\d_]{1,12}(?:/[^\W\d_]{1,12})?))?"
)
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?")
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
#: integers are stored as signed 64-bit values (what JSON consumers and msgspec decoders agree on)
_INT_LIMIT = 2**63
_INT_DIGITS = 19  # 2**63 has 19 digits: a Decimal whose leading digit sits further left is too large


class Converted(NamedTuple):
    """A converted value (or None) and, when conversion failed, why."""

    value: FieldValue
    problem: str | None = None


def convert(field: FieldDefinition, value: FieldValue) -> Converted:
    """``value`` as the type of ``field``, or None with a problem when that is not unambiguous."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return Converted(None)
    match field.type:
        case "str":
            return _to_str(value)
        case "int" | "float":
            return _to_number(value, field.type)
        case "bool":
            return _to_bool(value)
        case "date":
            return _to_date(value)
        case "list" | "list[str]":
            return _to_list(value, "str")
        case "list[int]":
            return _to_list(value, "int")
        case "list[float]":
            return _to_list(value, "float")
        case "dict":
            return _to_dict(value)


def parse_number(text: str) -> Decimal | None:
    """The one number written in ``text`` ("1,200", "12.5 %", "1.5e3", "12,5"), or None."""
    match = _NUMBER.fullmatch(text.strip())
    if match is None or (match["decimal_comma"] is not None and match["sep"] is not None):
        return None  # "1,234,5": a decimal comma after thousands separators is too ambiguous to read
    digits = re.sub(r"\D", "", match["digits"])
    if match["decimal_comma"] is not None:
        digits += "." + match["decimal_comma"]
    digits += (match["fraction"] or "") + (match["exponent"] or "")
    try:
        number = Decimal(digits)
    except InvalidOperation:  # an exponent beyond what Decimal holds ("1e99999999999999999999")
        return None
    # copy_negate, not "-": unary minus rounds to the context, and "-1e999999999" overflows it
    return number.copy_negate() if match["sign"] in ("-", "\u2212") else number


def _to_str(value: FieldValue) -> Converted:
    if isinstance(value, bool):
        return Converted("true" if value else "false")
    if isinstance(value, str):
        return Converted(value.strip())
    if isinstance(value, int | float):
        try:
            return Converted(str(value))
        except ValueError:  # an integer of over 4300 digits (sys.get_int_max_str_digits)
            return Converted(None, f"{_show(value)} is too long")
    return Converted(None, f"expected a single value, got a {type(value).__name__}")


def _to_number(value: FieldValue, kind: str) -> Converted:
    number: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)  # exact, any size (math.isfinite overflows on ints beyond float range)
    elif isinstance(value, float):
        number = Decimal(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        number = parse_number(value)
    if number is None:
        return Converted(None, f"could not read {_show(value)} as {'an integer' if kind == 'int' else 'a float'}")
    if kind == "float":
        as_float = float(number)
        return Converted(as_float) if math.isfinite(as_float) else Converted(None, f"{_show(value)} is too large")
    if number != number.to_integral_value():
        return Converted(None, f"{_show(value)} is not an integer")
    # Checked before int(): int(Decimal("1e2000000")) takes minutes and "1e999999999" never finishes.
    if number.adjusted() >= _INT_DIGITS or not -_INT_LIMIT <= number < _INT_LIMIT:
        return Converted(None, f"{_show(value)} is too large for an integer")
    return Converted(int(number))


def _to_bool(value: FieldValue) -> Converted:
    if isinstance(value, bool):
        return Converted(value)
    if isinstance(value, int | float) and value in (0, 1):
        return Converted(value == 1)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return Converted(word in _TRUE)
    return Converted(None, f"could not read {_show(value)} as true or false")


def _to_date(value: FieldValue) -> Converted:
    match = _ISO_DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is not None:
        try:
            return Converted(datetime.date(*(int(part) for part in match.groups())).isoformat())
        except ValueError:
            pass
    return Converted(None, f"could not read {_show(value)} as a date (YYYY-MM-DD)")


def _to_list(value: FieldValue, kind: str) -> Converted:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, dict):
        return Converted(None, "expected a list, got a dict")
    converted: list[object] = []
    for item in items:
        if item is None or (isinstance(item, str) and not item.strip()):
            continue
        if not isinstance(item, str | int | float):
            return Converted(None, f"expected a list of single values, got a {type(item).__name__} in it")
        result = _to_str(item) if kind == "str" else _to_number(item, kind)
        if result.problem is not None:
            return Converted(None, f"list item: {result.problem}")
        converted.append(result.value)
    return Converted(converted or None)


def _to_dict(value: FieldValue) -> Converted:
    if isinstance(value, dict):
        return Converted(value)
    if not isinstance(value, list):
        return Converted(None, f"expected a dict, got {_show(value)}")
    pairs: dict[str, object] = {}
    for item in value:
        if not (isinstance(item, dict) and set(item) == {"key", "value"} and isinstance(item["key"], str)):
            return Converted(None, 'expected a dict or a list of {"key": …, "value": …} objects')
        if item["key"] in pairs:
            return Converted(None, f"duplicate key {item['key']!r}")
        pairs[item["key"]] = item["value"]
    return Converted(pairs or None)


def _show(value: FieldValue) -> str:
    try:
        text = repr(value)
    except ValueError:  # it holds an integer of over 4300 digits
        return "a value holding an integer of over 4300 digits"
    return text if len(text) <= 60 else text[:57] + "..."
