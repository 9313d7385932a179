"""civicsync.kafka.pgtext prints what PostgreSQL prints: each formatter against the real server, with
hypothesis drawing the values (dates across BC, timestamps, intervals with mixed signs, floats,
numerics, money, array elements that need quoting)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicsync.kafka import pgtext
from civicsync.localpg import LocalPostgres

PG_FIRST_DAY = -2440588   # 4714-11-24 BC, PostgreSQL's first date
_SETTINGS = settings(max_examples=int(os.environ.get("PGTEXT_EXAMPLES", "150")), deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pg(pg_server: LocalPostgres) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET lc_monetary = 'C'")
        yield conn


def one(conn: psycopg.Connection[Any], sql: str, *args: object) -> str:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return str(row[0])


@_SETTINGS
@given(days=st.integers(PG_FIRST_DAY, 2_000_000) | st.sampled_from([-735160, -719528, -719529, 0, -1, 19782]))
def test_date_text(pg: psycopg.Connection[Any], days: int) -> None:
    assert pgtext.date_text(days) == one(pg, "SELECT (date '1970-01-01' + %s::int)::text", days)


@_SETTINGS
@given(days=st.integers(-2_000_000, 2_000_000), micros=st.integers(0, 86_400_000_000 - 1),
       tz=st.booleans())
def test_timestamp_text(pg: psycopg.Connection[Any], days: int, micros: int, tz: bool) -> None:
    total = days * 86_400_000_000 + micros
    kind = "timestamptz" if tz else "timestamp"
    expected = one(pg, f"SELECT ({kind} '1970-01-01 00:00:00+00' + %s::int * interval '1 day'"
                   " + %s::bigint * interval '1 microsecond')::text", days, micros)
    assert pgtext.timestamp_text(total, utc_offset=tz) == expected


@_SETTINGS
@given(micros=st.integers(0, 86_400_000_000))
def test_time_text(pg: psycopg.Connection[Any], micros: int) -> None:
    expected = one(pg, "SELECT CASE WHEN %s::bigint = 86400000000 THEN '24:00:00'::time"
                   " ELSE time '00:00' + %s::bigint * interval '1 microsecond' END::text", micros, micros)
    assert pgtext.time_text(micros) == expected


@_SETTINGS
@given(months=st.integers(-100_000, 100_000), days=st.integers(-100_000, 100_000),
       micros=st.integers(-(2**50), 2**50))
def test_interval_text(pg: psycopg.Connection[Any], months: int, days: int, micros: int) -> None:
    expected = one(pg, "SELECT (%s::int * interval '1 month' + %s::int * interval '1 day'"
                   " + make_interval(secs => 0) + %s::bigint * interval '1 microsecond')::text",
                   months, days, micros)
    assert pgtext.interval_text(months, days, micros) == expected


@_SETTINGS
@given(value=st.floats(allow_nan=True, allow_infinity=True)
       | st.sampled_from([1e15, 1e14, 123456789012345.6, 1e-4, 1e-5, 0.0001234, -0.0, 3.0, 1e16, 5e-324]))
def test_float8_text(pg: psycopg.Connection[Any], value: float) -> None:
    assert pgtext.float_text(value) == one(pg, "SELECT %s::float8::text", value)


@_SETTINGS
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False)
       | st.sampled_from([1e6, 1e5, 123456.0, 1.1, 3.4028235e38, 1e-5]))
def test_float4_text(pg: psycopg.Connection[Any], value: float) -> None:
    value = struct.unpack("f", struct.pack("f", value))[0]
    # The float8 -> float4 cast is exact (the value is a float32), so the server's text is the reference;
    # Debezium's JSON carries a real as Java's shortest float text, which _shortest_float32 reproduces.
    expected = one(pg, "SELECT %s::float8::float4::text", value)
    assert pgtext.float_text(_shortest_float32(value), single=True) == expected


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32, as Java's Float.toString gives it."""
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("f", candidate) == struct.pack("f", value):
            return candidate
    return value


@_SETTINGS
@given(unscaled=st.integers(-(10**40), 10**40), scale=st.integers(0, 30))
def test_numeric_text(pg: psycopg.Connection[Any], unscaled: int, scale: int) -> None:
    assert pgtext.numeric_text(unscaled, scale) == one(pg, "SELECT (%s || 'e-' || %s)::numeric::text",
                                                       str(unscaled), str(scale))


@_SETTINGS
@given(unscaled=st.integers(-(2**63), 2**63 - 1))
def test_money_text(pg: psycopg.Connection[Any], unscaled: int) -> None:
    assert pgtext.money_text(unscaled) == one(pg, "SELECT ((%s || 'e-2')::numeric)::money::text", str(unscaled))


_ELEMENT = st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               max_size=8) | st.sampled_from(["NULL", "null", "", " ", "a,b", '"', "\\", "{}"])


@_SETTINGS
@given(elements=st.lists(_ELEMENT, max_size=6))
def test_array_text(pg: psycopg.Connection[Any], elements: list[str | None]) -> None:
    assert pgtext.array_text(elements) == one(pg, "SELECT %s::text[]::text", elements)


def test_bits_and_bytea_text() -> None:
    # Debezium's Bits is a little-endian bit set: bit(10) '1000000001' arrives as bytes 01 02.
    assert pgtext.bits_text(bytes([0x01, 0x02]), 10) == "1000000001"
    assert pgtext.bits_text(bytes([0x01]), 10) == "0000000001"
    assert pgtext.bits_text(b"", 3) == "000"
    assert pgtext.bytea_text(b"\x00\xff\x10") == "\\x00ff10"


def test_iso_values() -> None:
    assert pgtext.iso_timestamptz_text("-0043-03-15T10:00:00.000000Z") == "0044-03-15 10:00:00+00 BC"
    assert pgtext.iso_timestamptz_text("2024-02-29T11:14:15.500000Z") == "2024-02-29 11:14:15.5+00"
    assert pgtext.iso_timestamptz_text("2024-02-29T13:14:15+02:00") == "2024-02-29 11:14:15+00"
    assert pgtext.iso_timetz_text("07:04:56.789Z") == "07:04:56.789+00"
    assert pgtext.iso_interval_text("P-1Y0M0DT0H0M-0.000001S") == "-1 years -00:00:00.000001"
    assert pgtext.iso_interval_text("P0Y0M0DT0H0M0S") == "00:00:00"
    with pytest.raises(pgtext.TextDecodeError):
        pgtext.iso_timestamptz_text("yesterday")
