"""PostgreSQL's own text output for values that arrive in other shapes (days, microseconds, unscaled
integers, IEEE floats, ISO 8601 strings), so a decoded value equals what the source server prints.

The session settings assumed are PostgreSQL's defaults plus ``TimeZone=UTC``: ``DateStyle=ISO``,
``IntervalStyle=postgres``, ``extra_float_digits=1`` (shortest exact floats), ``lc_monetary=C``.
Dates use the proleptic Gregorian calendar and PostgreSQL's ``BC`` suffix (there is no year 0).
"""

from __future__ import annotations

import math
import re
import struct
from decimal import Decimal

from civicsync.errors import FatalError

_DAY_US = 86_400_000_000


class TextDecodeError(FatalError, ValueError):
    """A value cannot be turned into PostgreSQL text (malformed input)."""


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count from 1970-01-01; astronomical years (0 = 1 BC)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    """The inverse of :func:`civil_from_days`."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _ymd(year: int, month: int, day: int) -> tuple[str, bool]:
    bc = year <= 0
    return f"{(1 - year) if bc else year:04d}-{month:02d}-{day:02d}", bc


def date_text(days: int) -> str:
    """``2024-02-29`` / ``0044-03-15 BC`` for a day count from 1970-01-01."""
    ymd, bc = _ymd(*civil_from_days(days))
    return f"{ymd} BC" if bc else ymd


def _fraction(micros: int) -> str:
    return f".{micros:06d}".rstrip("0") if micros else ""


def time_text(micros: int) -> str:
    """``HH:MM:SS[.ffffff]`` (trailing zeros dropped) for microseconds since midnight; 24:00:00 too."""
    seconds, frac = divmod(micros, 1_000_000)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{sec:02d}{_fraction(frac)}"


def timestamp_text(micros: int, utc_offset: bool = False) -> str:
    """``timestamp`` text (or ``timestamptz`` in UTC, ``+00``) for microseconds from the epoch."""
    days, rest = divmod(micros, _DAY_US)
    ymd, bc = _ymd(*civil_from_days(days))
    text = f"{ymd} {time_text(rest)}{'+00' if utc_offset else ''}"
    return f"{text} BC" if bc else text


_ISO_TS = re.compile(r"([+-]?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?")


def _offset_seconds(zone: str | None) -> int:
    if zone in (None, "Z"):
        return 0
    assert zone is not None
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def iso_timestamptz_text(text: str) -> str:
    """Debezium's ``ZonedTimestamp`` (ISO 8601, astronomical year) as PostgreSQL ``timestamptz`` in UTC."""
    if text in ("infinity", "-infinity"):
        return text
    m = _ISO_TS.fullmatch(text)
    if m is None:
        raise TextDecodeError(f"not an ISO 8601 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    frac = int((m.group(7) or "0").ljust(9, "0")[:6])
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec
    return timestamp_text((seconds - _offset_seconds(m.group(8))) * 1_000_000 + frac, utc_offset=True)


_ISO_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)")


def iso_timetz_text(text: str) -> str:
    """Debezium's ``ZonedTime`` (``07:04:56.789Z``) as PostgreSQL ``timetz`` text (``07:04:56.789+00``)."""
    m = _ISO_TIME.fullmatch(text)
    if m is None:
        raise TextDecodeError(f"not an ISO 8601 time: {text[:40]!r}")
    micros = (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))) * 1_000_000
    micros += int((m.group(4) or "0").ljust(9, "0")[:6])
    offset = _offset_seconds(m.group(5))
    sign = "-" if offset < 0 else "+"
    hh, rest = divmod(abs(offset), 3600)
    zone = f"{sign}{hh:02d}" + (f":{rest // 60:02d}" if rest else "")
    return time_text(micros) + zone


def _plural(n: int, unit: str, plural: str) -> str:
    return f"{n} {unit if n == 1 else plural}"


def interval_text(months: int, days: int, micros: int) -> str:
    """PostgreSQL's ``IntervalStyle=postgres`` text for an interval's three fields."""
    years, mons = int(months / 12), months - int(months / 12) * 12  # C truncation, as PostgreSQL
    parts: list[str] = []
    negative_seen = False
    for value, unit, plural in ((years, "year", "years"), (mons, "mon", "mons"), (days, "day", "days")):
        if value:
            sign = "+" if negative_seen and value > 0 else ""
            parts.append(sign + _plural(value, unit, plural))
            negative_seen = value < 0  # PostgreSQL looks at the previous field only
    if micros or not parts:
        sign = "-" if micros < 0 else ("+" if negative_seen else "")
        parts.append(sign + time_text(abs(micros)))
    return " ".join(parts)


_ISO_INTERVAL = re.compile(r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
                           r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?")


def iso_interval_text(text: str) -> str:
    """Debezium's ``Interval`` (``interval.handling.mode=string``: ``P1Y2M3DT4H5M6.789S``) as PostgreSQL text."""
    m = _ISO_INTERVAL.fullmatch(text)
    if m is None:
        raise TextDecodeError(f"not an ISO 8601 duration: {text[:40]!r}")
    y, mo, d, h, mi = (int(g or 0) for g in m.groups()[:5])
    micros = int((Decimal(m.group(6) or "0") * 1_000_000).to_integral_value())
    return interval_text(y * 12 + mo, d, (h * 3600 + mi * 60) * 1_000_000 + micros)


def float_text(value: float | str, single: bool = False) -> str:
    """PostgreSQL's shortest-exact float text: ``1e+15``, ``1e-05``, ``0.1``, ``-0``, ``NaN``, ``-Infinity``.
    Exponential below 1e-4 and from 1e15 (1e6 for ``real``), as PostgreSQL prints them."""
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return value
        value = float(value)
    return _finite_float_text(value, single)


def _finite_float_text(value: float, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if single:  # JSON carries a real as a decimal; the value is the float32 nearest to it
        value = float(struct.unpack("f", struct.pack("f", value))[0])
    sign, digits, exponent = Decimal(_shortest(value, single)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits))
    point = len(mantissa) + exponent - 1  # decimal exponent of the first digit
    prefix = "-" if sign else ""
    if value == 0:
        return prefix + "0"
    if point < -4 or point >= (6 if single else 15):
        frac = f".{mantissa[1:]}" if len(mantissa) > 1 else ""
        return f"{prefix}{mantissa[0]}{frac}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{prefix}0.{'0' * (-point - 1)}{mantissa}"
    whole = mantissa[: point + 1].ljust(point + 1, "0")
    frac = mantissa[point + 1:]
    return f"{prefix}{whole}.{frac}" if frac else prefix + whole


def _shortest(value: float, single: bool) -> str:
    """The shortest decimal that reads back as ``value`` (a float32 when ``single``), strictly inside
    its rounding interval as in PostgreSQL's Ryu: where a shorter decimal lies exactly half-way to a
    neighbour, PostgreSQL prints more digits (Python's repr does not)."""
    # float32: 24-bit significand, subnormals from 2^-149
    ulp = Decimal(2) ** max(math.frexp(value)[1] - 24, -149) if single else Decimal(math.ulp(value))
    exact, half_ulp = Decimal(value), ulp / 2
    if not single and abs(Decimal(text := repr(value)) - exact) < half_ulp:
        return text  # the common case, without the search
    for digits in range(1, 10 if single else 18):
        candidate = f"{value:.{digits - 1}e}"
        if abs(Decimal(candidate) - exact) < half_ulp:
            return candidate
    return repr(value)


def numeric_text(unscaled: int, scale: int) -> str:
    """``numeric`` text of ``unscaled × 10^-scale``, with exactly ``scale`` decimals."""
    sign = "-" if unscaled < 0 else ""
    digits = str(abs(unscaled))
    if scale <= 0:
        return sign + digits + "0" * -scale if unscaled else "0"
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def money_text(unscaled: int, scale: int = 2) -> str:
    """``money`` text with ``lc_monetary=C``: ``$1,234.56``, ``-$0.01``."""
    text = numeric_text(abs(unscaled), scale)
    whole, _, frac = text.partition(".")
    grouped = f"{int(whole):,}"
    return f"{'-' if unscaled < 0 else ''}${grouped}{'.' + frac if frac else ''}"


def bytea_text(data: bytes) -> str:
    """``bytea`` hex output: ``\\x00ff10``."""
    return "\\x" + data.hex()


def bits_text(data: bytes, length: int | None) -> str:
    """``bit(n)`` text from Debezium's ``Bits`` (a little-endian bit set); ``length`` pads ``bit(n)``."""
    if not data:
        return "0" * length if length else ""
    value = int.from_bytes(data, "little")
    text = format(value, "b")
    return text.zfill(length) if length else text


_NEEDS_QUOTES = re.compile(r'[{}",\\ \t\n\r\v\f]')  # ASCII white space only, as array_isspace()


def array_element_text(value: str | None) -> str:
    """One element of an array literal, quoted where PostgreSQL's output quotes it."""
    if value is None:
        return "NULL"
    if value == "" or value.upper() == "NULL" or _NEEDS_QUOTES.search(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def array_text(elements: list[str | None], delimiter: str = ",") -> str:
    """A one-dimensional array literal: ``{1,NULL,"a,b"}``."""
    return "{" + delimiter.join(array_element_text(e) for e in elements) + "}"


_JAVA_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def geometric_text(java_text: str) -> str:
    """A geometric value as the JDBC driver printed it (``{1.0,-1.0,0.0}``, ``1.0E20``) with each
    coordinate in PostgreSQL's float format (``{1,-1,0}``, ``1e+20``)."""
    return _JAVA_NUMBER.sub(lambda m: float_text(float(m.group())), java_text)
