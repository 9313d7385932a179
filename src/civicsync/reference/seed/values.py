"""The reference seed's shared ground: the anchor date, the plan of one run, reference values
(names, districts, occupations) and the small generators every table uses."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import TypeVar

ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)
"""The fixed point in time every seeded timestamp is relative to (except events and feedback)."""

PROGRESS_EVERY = 10_000
"""``progress`` is called after every this many rows of a table (and once for the remainder)."""

Row = tuple[object, ...]
Progress = Callable[[str, int], None]
T = TypeVar("T")

_DAY = 86_400
_EPOCH = date(1970, 1, 1)
_ANCHOR_T = int(ANCHOR.timestamp())
_PORTAL_SHARE = 0.85
_NID_BASE = 200_000_000_000  # profile national ids: 12 digits starting 2..8
_NID_SPACE = 700_000_000_000
_PROFILE_PHONE_MIN = 6_100_000_000  # profile phones never start 6000 (reserved for comment PII)
_PROFILE_PHONE_SPAN = 3_900_000_000


@dataclass(frozen=True)
class SeedCounts:
    """What a seed wrote: rows per ``"connection.schema.table"`` and the wall-clock seconds."""

    rows: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """Rows written over all tables."""
        return sum(self.rows.values())


# --------------------------------------------------------------------------- reference values

# (district, state, pincode prefix, regional language)
_DISTRICTS: tuple[tuple[str, str, str, str], ...] = (
    ("Pune", "Maharashtra", "411", "mr"), ("Nashik", "Maharashtra", "422", "mr"),
    ("Nagpur", "Maharashtra", "440", "mr"), ("Aurangabad", "Maharashtra", "431", "mr"),
    ("Kolhapur", "Maharashtra", "416", "mr"),
    ("Chennai", "Tamil Nadu", "600", "ta"), ("Madurai", "Tamil Nadu", "625", "ta"),
    ("Coimbatore", "Tamil Nadu", "641", "ta"), ("Salem", "Tamil Nadu", "636", "ta"),
    ("Tiruchirappalli", "Tamil Nadu", "620", "ta"),
    ("Lucknow", "Uttar Pradesh", "226", "hi"), ("Varanasi", "Uttar Pradesh", "221", "hi"),
    ("Agra", "Uttar Pradesh", "282", "hi"), ("Kanpur Nagar", "Uttar Pradesh", "208", "hi"),
    ("Gorakhpur", "Uttar Pradesh", "273", "hi"),
    ("Kolkata", "West Bengal", "700", "bn"), ("Howrah", "West Bengal", "711", "bn"),
    ("Darjeeling", "West Bengal", "734", "bn"), ("Murshidabad", "West Bengal", "742", "bn"),
    ("Nadia", "West Bengal", "741", "bn"),
    ("Hyderabad", "Telangana", "500", "te"), ("Warangal", "Telangana", "506", "te"),
    ("Karimnagar", "Telangana", "505", "te"), ("Nizamabad", "Telangana", "503", "te"),
    ("Khammam", "Telangana", "507", "te"),
    ("Patna", "Bihar", "800", "hi"), ("Gaya", "Bihar", "823", "hi"), ("Muzaffarpur", "Bihar", "842", "hi"),
    ("Bhagalpur", "Bihar", "812", "hi"), ("Darbhanga", "Bihar", "846", "hi"),
)
_MALE = ("Aarav", "Rahul", "Amit", "Suresh", "Ramesh", "Vijay", "Arjun", "Karthik", "Sanjay", "Rajesh",
         "Anil", "Mohan", "Ravi", "Prakash", "Sunil", "Manoj", "Deepak", "Ganesh", "Imran", "Joseph",
         "Harish", "Venkat", "Sourav", "Abhishek", "Nitin", "Farhan", "Gopal", "Bhaskar")
_FEMALE = ("Priya", "Anjali", "Sunita", "Lakshmi", "Kavita", "Meena", "Pooja", "Divya", "Lata", "Rekha",
           "Fatima", "Ayesha", "Sneha", "Geeta", "Radha", "Shanti", "Anita", "Swati", "Deepa", "Mary",
           "Nandini", "Revathi", "Moumita", "Shabana", "Usha", "Jyoti", "Asha", "Padma")
_ANY_FIRST = _MALE + _FEMALE
_LAST = ("Sharma", "Verma", "Patil", "Deshmukh", "Iyer", "Nair", "Reddy", "Rao", "Kumar", "Singh", "Yadav",
         "Gupta", "Das", "Chatterjee", "Banerjee", "Mukherjee", "Khan", "Ansari", "Pillai", "Naidu", "Joshi",
         "Kulkarni", "Pandey", "Mishra", "Tiwari", "Sinha", "Prasad", "Ghosh", "Bose", "Shaikh", "Jadhav",
         "Pawar", "Murugan", "Subramanian", "Krishnan", "Choudhary", "Thakur", "Mandal", "Paswan", "Goud")
_LOCALITIES = ("MG Road", "Station Road", "Gandhi Nagar", "Nehru Colony", "Shivaji Chowk", "Lake View Road",
               "Market Street", "Temple Street", "Ambedkar Nagar", "Rajiv Nagar", "Subhash Marg",
               "Indira Colony", "Court Road", "Old Bazaar", "Ram Nagar", "Shanti Vihar", "Mill Road",
               "Kali Bari Lane", "Anna Salai", "Gandhi Maidan Road")
_OCCUPATIONS = ("Farmer", "Agricultural Labourer", "Daily Wage Worker", "Homemaker", "Student",
                "Small Trader", "Driver", "Teacher", "Nurse", "Construction Worker", "Artisan", "Fisher",
                "Retired", "Unemployed", "Private Employee", "Government Employee", "Self-employed",
                "Domestic Worker")
_YOUNG_JOBS = ("Student",) * 12 + _OCCUPATIONS  # under 25 at the anchor
_SENIOR_JOBS = ("Retired",) * 10 + ("Farmer", "Homemaker", "Small Trader", "Artisan", "Self-employed")  # 60+
_WORKING_JOBS = tuple(o for o in _OCCUPATIONS if o not in ("Student", "Retired"))
_LANGUAGES = ("en", "hi", "ta", "te", "bn", "mr")


def _weighted(*pairs: tuple[T, int]) -> tuple[T, ...]:
    """A lookup table in which each value appears ``weight`` times: pick with ``t[int(r() * len(t))]``."""
    return tuple(value for value, weight in pairs for _ in range(weight))


_GENDERS = _weighted(("M", 99), ("F", 99), ("X", 2))
_SOCIAL = _weighted(("GEN", 30), ("OBC", 42), ("SC", 18), ("ST", 10))
_HOUSEHOLD = _weighted((1, 6), (2, 12), (3, 18), (4, 24), (5, 17), (6, 10), (7, 6), (8, 4), (9, 3))


# --------------------------------------------------------------------------- plan and small helpers


@dataclass(frozen=True)
class _Plan:
    """Everything a generator needs: the seed, the size and the two reference dates."""

    seed: int
    citizens: int
    events_per_citizen: int
    today_t: int  # 00:00 UTC of today's date, in epoch seconds

    def rng(self, stream: str) -> random.Random:
        """The independent, reproducible random stream for one table (or purpose)."""
        return random.Random(f"civicsync-seed:{self.seed}:{stream}")


@cache
def _day(day_number: int) -> str:
    """ISO date of the given day since 1970-01-01."""
    return (_EPOCH + timedelta(days=day_number)).isoformat()


_HOUR_MINUTE = tuple(f" {m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SECOND = tuple(f"{s:02d}" for s in range(60))


def _ts(t: int) -> str:
    """A timestamptz literal (UTC) for epoch seconds ``t``."""
    d, rem = divmod(t, _DAY)
    m, s = divmod(rem, 60)
    return f"{_day(d)}{_HOUR_MINUTE[m]}{_SECOND[s]}+00"


def _ts_ms(t_ms: int) -> str:
    """A timestamptz literal (UTC) for epoch milliseconds."""
    t, ms = divmod(t_ms, 1000)
    d, rem = divmod(t, _DAY)
    m, s = divmod(rem, 60)
    return f"{_day(d)}{_HOUR_MINUTE[m]}{_SECOND[s]}.{ms:03d}+00"


_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid(bits: int) -> str:
    """A version-4 UUID string from 128 random bits (same value as ``uuid.UUID(int=bits, version=4)``)."""
    h = bits.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _phone(r: Callable[[], float]) -> str:
    """A 10-digit mobile number 6100000000..9999999999 (never the comment-only 6000 prefix)."""
    return str(_PROFILE_PHONE_MIN + int(r() * _PROFILE_PHONE_SPAN))


def _distinct(r: Callable[[], float], n: int, k: int) -> list[int]:
    """``k`` distinct indexes below ``n`` (k much smaller than n)."""
    picked: list[int] = []
    while len(picked) < k:
        i = int(r() * n)
        if i not in picked:
            picked.append(i)
    return picked


class _NationalIds:
    """Unique 12-digit national ids from row indexes, without remembering any.

    A keyed permutation of [0, 7e11): the index is split into (high, low) = divmod(index, 10**6)
    and put through four rounds of a mixed-radix Feistel network (each round adds a keyed hash of
    one half to the other, modulo its range, so each round is a bijection). The result is offset
    by 2e11, so every id has 12 digits and starts with 2..8.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"civicsync-seed:{seed}:national-id")
        self._keys = tuple(rng.getrandbits(32) for _ in range(4))

    def __call__(self, index: int) -> str:
        k1, k2, k3, k4 = self._keys
        hi, lo = divmod(index, 1_000_000)
        lo = (lo + (((hi ^ k1) * 0x9E3779B1) >> 11)) % 1_000_000
        hi = (hi + (((lo ^ k2) * 0x85EBCA6B) >> 11)) % 700_000
        lo = (lo + (((hi ^ k3) * 0xC2B2AE35) >> 11)) % 1_000_000
        hi = (hi + (((lo ^ k4) * 0x27D4EB2F) >> 11)) % 700_000
        return str(_NID_BASE + hi * 1_000_000 + lo)


def _identities(plan: _Plan) -> Iterator[tuple[int, str, bool]]:
    """(row index, citizen_id, holds a portal account) for every citizen, in a fixed order."""
    rng = plan.rng("identity")
    bits, r = rng.getrandbits, rng.random
    for i in range(plan.citizens):
        yield i, _uuid(bits(128)), r() < _PORTAL_SHARE


