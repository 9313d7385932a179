"""Deterministic synthetic data for the reference smart_warehouse and smart_citizen databases.

``seed(warehouse_dsn, citizen_dsn, citizens)`` fills both reference schemas with plausible Indian
welfare-programme data: schemes, registry profiles, eligibility predictions, decisions and
summaries in the warehouse; portal accounts, the portal's scheme copy, applications, documents,
click-stream events and feedback in the citizen portal.

Streaming and memory
    Every table is written with ``COPY ... FROM STDIN`` from a generator: no table is ever held
    in memory, so 1,000,000 citizens seed in minutes with flat memory. A table that depends on
    another (portal accounts on registry profiles, documents on applications) *replays* the
    parent's generator rather than remembering its rows; replays are cheap and exact because
    every generator is deterministic.

Determinism
    For a given ``(seed, citizens)`` the data are identical on every run and machine. Each table
    draws from its own ``random.Random`` seeded with ``"<seed>:<table>"``, so no table depends on
    how many numbers another one drew. Citizen ids and portal membership come from one shared
    "identity" stream; national ids are a keyed bijective scramble (a small Feistel network)
    of the row index, so they are unique without remembering a set of them.
    Timestamps are relative to the fixed :data:`ANCHOR` (2026-11-01 00:00 UTC), never now().

    **Exception:** ``citizen.public.user_events`` and ``citizen.public.feedback`` fall on the
    seven complete UTC days before *today* (day offsets 1..7 back from today's UTC date, or the
    ``today`` argument), so a daily aggregation or incremental run finds full past days. Their
    day offsets and times of day are still drawn deterministically, so only the calendar date
    moves from one day to the next.

Personal data in free text
    About 40% of feedback comments embed a phone number (``6000123456``, ``+91 60001 23456``,
    ``060001-23456``), an e-mail address or a 12-digit id (``9123 4567 8901`` or unbroken) in
    prose, for the redaction rules to find. These are drawn from a separate random stream *and*
    from value spaces the profile data never use: comment phones start ``6000`` (profile phones
    are 6100000000..9999999999), comment e-mails are ``@mail.example.org`` (profiles use
    ``@example.in``), comment ids start with ``9`` (profile national ids start with 2..8). So a
    raw comment value found after masking is always a leak, never a coincidence with a value
    that is legitimately stored. Bank account numbers in application forms start with ``1`` for
    the same reason.

The portal never holds a raw national id in its account table (``national_id_masked`` is
``XXXX-XXXX-<last 4>``); application forms do carry the applicant's national id, as the real
forms do, for the application flows to mask.

Re-running replaces earlier seed data: the seeded tables are truncated (``TRUNCATE ... CASCADE``,
which also empties tables referencing them by foreign key: ``eligibility_hints`` and
``profile_summary`` in the portal, and ``eligibility_predictions`` when only the profiles are
seeded) in the same transaction as the COPYs, so each database gets all of the new data or none
of it; both transactions are committed only once both databases are written. The ``civicsync``
control schema (runs, watermarks) is never touched, so after a re-seed an incremental flow may
need its watermark reset to pick up rows whose timestamps are older than it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Literal, NamedTuple, TypeVar

import psycopg
from psycopg import sql

from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors

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


# --------------------------------------------------------------------------- schemes

# (subject, category, department, benefit_type, base amount, min_age, max_age)
_SUBJECTS: tuple[tuple[str, str, str, str, int, int, int | None], ...] = (
    ("Awas Yojana", "HOUSING", "Rural Development", "SUBSIDY", 120_000, 18, None),
    ("Kisan Samman Nidhi", "AGRICULTURE", "Agriculture and Farmers Welfare", "CASH", 6_000, 18, None),
    ("Ujjwala Gas Connection", "ENERGY", "Petroleum and Natural Gas", "IN_KIND", 1_600, 18, None),
    ("Shiksha Sahayata", "EDUCATION", "School Education", "CASH", 12_000, 5, 25),
    ("Matru Vandana", "WOMEN_CHILD", "Women and Child Development", "CASH", 5_000, 18, 45),
    ("Vridha Pension", "PENSION", "Social Justice and Empowerment", "CASH", 18_000, 60, None),
    ("Divyang Sahayata", "DISABILITY", "Social Justice and Empowerment", "CASH", 24_000, 0, None),
    ("Arogya Bima", "HEALTH", "Health and Family Welfare", "INSURANCE", 500_000, 0, None),
    ("Kaushal Vikas", "EMPLOYMENT", "Skill Development", "IN_KIND", 15_000, 18, 35),
    ("Anna Suraksha", "FOOD", "Food and Civil Supplies", "IN_KIND", 3_600, 0, None),
    ("Krishi Yantra Anudan", "AGRICULTURE", "Agriculture and Farmers Welfare", "SUBSIDY", 50_000, 18, None),
    ("Vidhva Pension", "PENSION", "Women and Child Development", "CASH", 12_000, 18, None),
)
_PREFIXES = ("Pradhan Mantri", "Mukhyamantri", "Rashtriya", "Rajya", "Gramin", "Shahari")
_SCHEME_STATUSES = ("ACTIVE",) * 30 + ("DRAFT",) * 3 + ("SUSPENDED",) * 3 + ("CLOSED",) * 4
_INCOME_CAPS = (100_000, 150_000, 250_000, 300_000, 500_000, 800_000)


@dataclass(frozen=True)
class _Scheme:
    scheme_id: int
    code: str
    name: str
    description: str
    department: str
    category: str
    benefit_type: str
    amount: str
    rules: str
    status: str
    start_date: str
    end_date: str | None
    updated_at: str

    def warehouse_row(self) -> Row:
        return (self.scheme_id, self.code, self.name, self.description, self.department, self.category,
                self.benefit_type, self.amount, self.rules, self.status, self.start_date, self.end_date,
                self.updated_at)


@lru_cache(maxsize=8)
def _schemes(seed: int) -> tuple[_Scheme, ...]:
    """The fixed set of 40 schemes for a seed (30 ACTIVE, 3 DRAFT, 3 SUSPENDED, 4 CLOSED)."""
    rng = random.Random(f"civicsync-seed:{seed}:schemes")
    combos = [(p, s) for p in _PREFIXES for s in _SUBJECTS]
    picked = rng.sample(combos, len(_SCHEME_STATUSES))
    statuses = list(_SCHEME_STATUSES)
    rng.shuffle(statuses)
    return tuple(_scheme(rng, i + 1, prefix, subject, statuses[i])
                 for i, (prefix, subject) in enumerate(picked))


def _scheme(rng: random.Random, scheme_id: int, prefix: str,
            subject: tuple[str, str, str, str, int, int, int | None], status: str) -> _Scheme:
    name, category, department, benefit_type, base, min_age, max_age = subject
    amount = base if benefit_type == "INSURANCE" else round(base * rng.uniform(0.6, 1.6), -2)
    rules: dict[str, object] = {"max_income": rng.choice(_INCOME_CAPS), "min_age": min_age}
    if max_age is not None:
        rules["max_age"] = max_age
    if category == "DISABILITY":
        rules["disability_required"] = True
    if rng.random() < 0.25:
        rules["social_categories"] = sorted(rng.sample(["OBC", "SC", "ST"], rng.randint(1, 3)))
    start = _ANCHOR_T // _DAY - rng.randint(60, 1500)
    end: int | None = None
    if status == "CLOSED":
        end = min(start + rng.randint(180, 900), _ANCHOR_T // _DAY - rng.randint(5, 60))
    elif rng.random() < 0.4:
        end = _ANCHOR_T // _DAY + rng.randint(90, 1000)
    return _Scheme(
        scheme_id=scheme_id, code=f"SCH-{scheme_id:04d}", name=f"{prefix} {name}",
        description=f"{benefit_type.replace('_', ' ').title()} support under the {prefix} {name} "
                    f"for eligible households.",
        department=f"Department of {department}", category=category, benefit_type=benefit_type,
        amount=f"{amount:.2f}", rules=json.dumps(rules), status=status, start_date=_day(start),
        end_date=_day(end) if end is not None else None,
        updated_at=_ts(_ANCHOR_T - rng.randint(3600, 120 * _DAY)),
    )


def _published(seed: int) -> tuple[_Scheme, ...]:
    """The schemes the portal lists: every non-DRAFT scheme."""
    return tuple(s for s in _schemes(seed) if s.status != "DRAFT")


def _warehouse_scheme_rows(plan: _Plan) -> Iterator[Row]:
    for scheme in _schemes(plan.seed):
        yield scheme.warehouse_row()


def _portal_scheme_rows(plan: _Plan) -> Iterator[Row]:
    """The portal's copy as of an earlier sync: a few names and statuses are out of date."""
    published = _published(plan.seed)
    rng = plan.rng("portal-schemes")
    stale = rng.sample(range(len(published)), 6)
    stale_name, stale_status = set(stale[:4]), set(stale[4:])
    synced_at = _ts(_ANCHOR_T - _DAY + 300)
    for i, s in enumerate(published):
        name = s.name.replace("Mukhyamantri", "CM").replace("Pradhan Mantri", "PM")
        name = f"{name} Scheme" if i in stale_name else s.name
        status = "OPEN" if s.status == "ACTIVE" else "CLOSED"
        if i in stale_status:
            status = "CLOSED" if status == "OPEN" else "OPEN"
        yield (s.scheme_id, s.code, name, s.description, s.category, f"{s.benefit_type}: {s.amount}", status,
               synced_at)


# --------------------------------------------------------------------------- registry profiles

_PROFILE_COLUMNS = ("citizen_id", "national_id", "full_name", "date_of_birth", "gender", "phone", "email",
                    "address_line", "district", "state", "pincode", "annual_income", "household_size",
                    "social_category", "occupation", "disability_status", "verified_at", "updated_at")
_DOB_FIRST = (date(1940, 1, 1) - _EPOCH).days
_DOB_SPAN = (date(2008, 12, 31) - _EPOCH).days - _DOB_FIRST + 1
_YOUNG_FROM = (date(2001, 11, 1) - _EPOCH).days  # born on or after: under 25
_SENIOR_UNTIL = (date(1966, 11, 1) - _EPOCH).days  # born before: 60 or over
_INCOME_MU, _INCOME_SIGMA = math.log(140_000), 0.75




def _with_lower(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((n, n.lower()) for n in names)


# (gender, its first names as (Name, name)), weighted like _GENDERS
_GENDER_NAMES = _weighted((("M", _with_lower(_MALE)), 99), (("F", _with_lower(_FEMALE)), 99),
                          (("X", _with_lower(_ANY_FIRST)), 2))
_LAST_NAMES = _with_lower(_LAST)
_DIGITS_2 = tuple(f"{i:02d}" for i in range(100))
_DIGITS_3 = tuple(f"{i:03d}" for i in range(1000))


def _address(r: Callable[[], float], district: str) -> str:
    house = 1 + int(r() * 480)
    return f"{house}, {_LOCALITIES[int(r() * len(_LOCALITIES))]}, {district}"


def _profile_rows(plan: _Plan) -> Iterator[Row]:
    """One registry profile per citizen (the hot loop of a 1M-row seed: keep it lean)."""
    rng = plan.rng("citizen_profiles")
    r, gauss, exp = rng.random, rng.gauss, math.exp
    national_id = _NationalIds(plan.seed)
    gender_names, last_names, districts = _GENDER_NAMES, _LAST_NAMES, _DISTRICTS
    households, socials = _HOUSEHOLD, _SOCIAL
    n_gn, n_last, n_dist, n_hh, n_soc = (len(gender_names), len(last_names), len(districts), len(households),
                                         len(socials))
    for i, citizen_id, _ in _identities(plan):
        gender, names = gender_names[int(r() * n_gn)]
        first, first_lower = names[int(r() * len(names))]
        last, last_lower = last_names[int(r() * n_last)]
        district, state, pin, _ = districts[int(r() * n_dist)]
        income = int(min(max(exp(_INCOME_MU + _INCOME_SIGMA * gauss()), 20_000.0), 2_500_000.0))
        updated = _ANCHOR_T - 60 - int(r() * (90 * _DAY - 60))
        born = _DOB_FIRST + int(r() * _DOB_SPAN)
        jobs = _YOUNG_JOBS if born >= _YOUNG_FROM else _SENIOR_JOBS if born < _SENIOR_UNTIL else _WORKING_JOBS
        yield (
            citizen_id, national_id(i), f"{first} {last}", _day(born), gender,
            str(_PROFILE_PHONE_MIN + int(r() * _PROFILE_PHONE_SPAN)),
            f"{first_lower}.{last_lower}{_DIGITS_2[int(r() * 100)]}@example.in",
            _address(r, district), district, state, pin + _DIGITS_3[int(r() * 1000)], f"{income}.00",
            households[int(r() * n_hh)], socials[int(r() * n_soc)], jobs[int(r() * len(jobs))],
            r() < 0.05, _ts(updated - int(r() * 400 * _DAY)) if r() < 0.8 else None, _ts(updated),
        )


# --------------------------------------------------------------------------- predictions, summaries

_PREDICTION_COLUMNS = ("prediction_id", "citizen_id", "scheme_id", "score", "status", "model_version",
                       "reasons", "predicted_at", "updated_at")
_REASONS = {
    "ELIGIBLE": ("income below scheme limit", "age within range", "district covered", "category matches"),
    "LIKELY": ("income near scheme limit", "age within range", "document pending", "household size fits"),
    "INELIGIBLE": ("income above scheme limit", "age outside range", "already enrolled", "category excluded"),
    "EXPIRED": ("prediction older than model window", "profile changed since prediction"),
}


def _reason_pool(status: str) -> tuple[str, ...]:
    """Every 1- and 2-reason JSON list for a status, pre-serialised."""
    reasons = _REASONS[status]
    singles = [json.dumps([a]) for a in reasons]
    pairs = [json.dumps([a, b]) for a in reasons for b in reasons if a < b]
    return tuple(singles + pairs)


def _prediction_rows(plan: _Plan) -> Iterator[Row]:
    """About three predictions per citizen, for distinct published schemes."""
    rng = plan.rng("eligibility_predictions")
    r = rng.random
    scheme_ids = [s.scheme_id for s in _published(plan.seed)]
    pools = {status: _reason_pool(status) for status in _REASONS}
    counts = (2, 3, 3, 3, 4)
    pid = 0
    for _, citizen_id, _ in _identities(plan):
        for k in _distinct(r, len(scheme_ids), counts[int(r() * 5)]):
            score = int(r() * 10_001)
            expired = r() < 0.03
            status = ("EXPIRED" if expired else "ELIGIBLE" if score >= 7500
                      else "LIKELY" if score >= 5000 else "INELIGIBLE")
            pool = pools[status]
            at = _ts(_ANCHOR_T - int(r() * (120 if expired else 30) * _DAY))
            pid += 1
            yield (pid, citizen_id, scheme_ids[k], f"{score / 10_000:.4f}", status,
                   "elig-2026.07" if expired else "elig-2026.10", pool[int(r() * len(pool))], at, at)


_SUMMARY_COLUMNS = ("citizen_id", "schemes_enrolled", "total_benefits_received", "active_applications",
                    "last_benefit_date", "computed_at", "updated_at")
_ENROLLED = _weighted((0, 30), (1, 35), (2, 20), (3, 10), (4, 5))


def _summary_rows(plan: _Plan) -> Iterator[Row]:
    """One summary per citizen: enrolments, benefits received so far, open applications."""
    rng = plan.rng("profile_summaries")
    r = rng.random
    computed = _ts(_ANCHOR_T - _DAY + 2 * 3600)
    anchor_day = _ANCHOR_T // _DAY
    for _, citizen_id, _ in _identities(plan):
        enrolled = _ENROLLED[int(r() * len(_ENROLLED))]
        total = sum(int(r() * 380 + 20) * 100 for _ in range(enrolled))
        last = _day(anchor_day - 1 - int(r() * 365)) if total else None
        active = int(r() * 3) if enrolled else int(r() * 2)
        yield citizen_id, enrolled, f"{total:.2f}", active, last, computed, computed


# --------------------------------------------------------------------------- portal accounts

_CITIZEN_COLUMNS = ("citizen_id", "national_id_masked", "full_name", "date_of_birth", "gender", "phone",
                    "email", "address_line", "district", "state", "pincode", "preferred_language",
                    "profile_source", "updated_at")
_LANG_BY_DISTRICT = {d[0]: d[3] for d in _DISTRICTS}


def _language(r: Callable[[], float], district: str) -> str:
    x = r()
    return _LANG_BY_DISTRICT[district] if x < 0.55 else "en" if x < 0.8 else "hi" if x < 0.9 else \
        _LANGUAGES[int(r() * len(_LANGUAGES))]


def _edit(r: Callable[[], float], values: list[object]) -> None:
    """A citizen's own edit of phone, e-mail and/or address (a non-empty subset)."""
    fields = 1 + int(r() * 7)
    name = str(values[2]).lower().split()
    if fields & 1:
        values[5] = _phone(r)
    if fields & 2:
        values[6] = f"{name[0]}_{name[-1]}{int(r() * 1000):03d}@example.in"
    if fields & 4:
        values[7] = _address(r, str(values[8]))


def _stale(r: Callable[[], float], values: list[object]) -> None:
    """An older copy: often one value the registry has since changed."""
    x = r()
    if x < 0.2:
        values[5] = _phone(r)
    elif x < 0.4:
        first, *_, last = str(values[2]).split()
        values[2] = f"{first[0]}. {last}"
    elif x < 0.6:
        values[7] = _address(r, str(values[8]))


def _citizen_rows(plan: _Plan) -> Iterator[Row]:
    """Portal accounts for ~85% of the registry: ~10% newer citizen edits, ~5% stale older copies."""
    rng = plan.rng("citizens")
    r = rng.random
    for (_, _, portal), row in zip(_identities(plan), _profile_rows(plan), strict=True):
        if not portal:
            continue
        updated = int(datetime.fromisoformat(str(row[17])).timestamp())
        values = list(row[:11])
        values[1] = f"XXXX-XXXX-{str(row[1])[-4:]}"
        x, source = r(), "registry" if r() < 0.9 else "portal"
        if x < 0.10:
            _edit(r, values)
            updated += 1 + int(r() * (_ANCHOR_T - updated - 1))
            source = "portal"
        elif x < 0.15:
            _stale(r, values)
            updated -= 3600 + int(r() * 60 * _DAY)
        values += [_language(r, str(values[8])), source, _ts(updated)]
        yield tuple(values)


# --------------------------------------------------------------------------- applications

_APPLICATION_COLUMNS = ("application_id", "citizen_id", "scheme_id", "status", "form_data", "decision_note",
                        "submitted_at", "updated_at")
_APP_STATUSES = _weighted(("DRAFT", 12), ("SUBMITTED", 15), ("UNDER_REVIEW", 15), ("DOCUMENTS_REQUIRED", 8),
                          ("APPROVED", 18), ("REJECTED", 10), ("DISBURSED", 17), ("WITHDRAWN", 5))
_APPS_PER_CITIZEN = _weighted((0, 6), (1, 3), (2, 1))
_NOTES = {
    "DOCUMENTS_REQUIRED": ("Please upload a recent income certificate.",
                           "Bank passbook copy is not legible."),
    "APPROVED": ("Approved by the district welfare officer.", "Eligibility verified; approved."),
    "REJECTED": ("Declared income is above the scheme limit.", "Applicant is already enrolled."),
    "DISBURSED": ("Benefit credited to the registered bank account.",),
}
_BANKS = ("SBIN", "PUNB", "BKID", "CNRB", "UBIN", "HDFC", "ICIC", "IOBA")


class _Application(NamedTuple):
    """What the tables derived from an application need to know about it."""

    application_id: int
    citizen_index: int
    citizen_id: str
    scheme_id: int
    status: str
    note: str | None
    submitted: int | None  # epoch seconds; None for a DRAFT
    updated: int


def _form(r: Callable[[], float], national_id: str, draft: bool) -> str:
    """The application form as the citizen filled it in (a draft may lack the bank details)."""
    form: dict[str, object] = {"national_id": national_id,
                               "household_income": int(r() * 400) * 1000 + 12_000}
    if not draft or r() < 0.5:
        digits = 12 + int(r() * 5)
        form["bank_account"] = "1" + str(int(r() * 10 ** (digits - 1))).zfill(digits - 1)
        form["ifsc"] = f"{_BANKS[int(r() * len(_BANKS))]}0{int(r() * 1_000_000):06d}"
    nominee = f"{_ANY_FIRST[int(r() * len(_ANY_FIRST))]} {_LAST[int(r() * len(_LAST))]}"
    form["nominee"] = {"name": nominee, "phone": _phone(r)}
    return json.dumps(form)


def _applications(plan: _Plan) -> Iterator[_Application]:
    """About one application per two portal citizens, for distinct published schemes.

    Replayed by the documents and decisions; the form, which only the applications table needs,
    is drawn from a stream of its own in :func:`_application_rows`.
    """
    rng = plan.rng("applications")
    r = rng.random
    scheme_ids = [s.scheme_id for s in _published(plan.seed)]
    app_id = 0
    for i, citizen_id, portal in _identities(plan):
        if not portal:
            continue
        for k in _distinct(r, len(scheme_ids), _APPS_PER_CITIZEN[int(r() * len(_APPS_PER_CITIZEN))]):
            app_id += 1
            status = _APP_STATUSES[int(r() * len(_APP_STATUSES))]
            start = _ANCHOR_T - 3600 - int(r() * 180 * _DAY)
            updated = start + 3600 + int(r() * (_ANCHOR_T - start - 3600))
            notes = _NOTES.get(status)
            note = notes[int(r() * len(notes))] if notes else None
            yield _Application(app_id, i, citizen_id, scheme_ids[k], status, note,
                               None if status == "DRAFT" else start, updated)


def _application_rows(plan: _Plan) -> Iterator[Row]:
    r = plan.rng("application-forms").random
    national_id = _NationalIds(plan.seed)
    for app in _applications(plan):
        form = _form(r, national_id(app.citizen_index), app.submitted is None)
        yield (app.application_id, app.citizen_id, app.scheme_id, app.status, form, app.note,
               None if app.submitted is None else _ts(app.submitted), _ts(app.updated))


_DOCUMENT_COLUMNS = ("document_id", "application_id", "doc_type", "file_name", "mime_type", "size_bytes",
                     "storage_uri", "sha256", "uploaded_at")
# (doc_type, file name stem)
_DOC_TYPES = (("INCOME_CERT", "income_certificate"), ("CASTE_CERT", "caste_certificate"),
              ("BANK_PASSBOOK", "bank_passbook"), ("PHOTO", "photo"), ("RATION_CARD", "ration_card"),
              ("ADDRESS_PROOF", "address_proof"), ("DISABILITY_CERT", "disability_certificate"))
_MIMES = (("application/pdf", "pdf"), ("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("image/png", "png"))


def _document_rows(plan: _Plan) -> Iterator[Row]:
    """0-3 uploaded documents per submitted (non-DRAFT) application."""
    rng = plan.rng("application_documents")
    r, bits = rng.random, rng.getrandbits
    doc_id = 0
    for app in _applications(plan):
        if app.submitted is None:
            continue
        for t in _distinct(r, len(_DOC_TYPES), int(r() * 4)):
            doc_type, stem = _DOC_TYPES[t]
            mime, ext = _MIMES[int(r() * len(_MIMES))]
            file_name = f"{stem}.{ext}"
            doc_id += 1
            uploaded = app.submitted - 2 * _DAY + int(r() * (app.updated - app.submitted + 2 * _DAY))
            yield (doc_id, app.application_id, doc_type, file_name, mime, 40_000 + int(r() * 4_000_000),
                   f"s3://portal-docs/{_uuid(bits(128))}/{file_name}", f"{bits(256):064x}", _ts(uploaded))


# --------------------------------------------------------------------------- decisions (warehouse)

_DECISION_COLUMNS = ("decision_id", "application_id", "citizen_id", "scheme_id", "decision_code", "reason",
                     "amount_sanctioned", "officer_id", "decided_at", "updated_at")
# The decision trail that leads to each portal status; its last code is the status's own.
_TRAILS = {
    "SUBMITTED": ("RCVD",),
    "UNDER_REVIEW": ("RCVD", "UNDER_REVIEW"),
    "DOCUMENTS_REQUIRED": ("RCVD", "UNDER_REVIEW", "PEND_DOC"),
    "APPROVED": ("RCVD", "UNDER_REVIEW", "APPR"),
    "REJECTED": ("RCVD", "UNDER_REVIEW", "REJ"),
    "DISBURSED": ("RCVD", "UNDER_REVIEW", "APPR", "DISB"),
}
_DECISION_REASONS = {"PEND_DOC": _NOTES["DOCUMENTS_REQUIRED"], "REJ": _NOTES["REJECTED"],
                     "APPR": _NOTES["APPROVED"]}


def _decision_rows(plan: _Plan) -> Iterator[Row]:
    """For about half of the submitted applications, the officer decisions that match their status."""
    rng = plan.rng("application_decisions")
    r = rng.random
    amounts = {s.scheme_id: s.amount for s in _schemes(plan.seed)}
    decision_id = 0
    for app in _applications(plan):
        trail = _TRAILS.get(app.status)
        if trail is None or app.submitted is None or r() >= 0.5:
            continue
        officer = f"OFF-{1000 + int(r() * 9000)}"
        step = max((app.updated - app.submitted) // len(trail), 1)
        for n, code in enumerate(trail):
            decision_id += 1
            reasons = _DECISION_REASONS.get(code)
            at = _ts(app.updated if n == len(trail) - 1 else app.submitted + n * step + int(r() * step))
            yield (decision_id, app.application_id, app.citizen_id, app.scheme_id, code,
                   reasons[int(r() * len(reasons))] if reasons else None,
                   amounts[app.scheme_id] if code in ("APPR", "DISB") else None, officer, at, at)


# --------------------------------------------------------------------------- click stream (last 7 days)

_EVENT_COLUMNS = ("event_id", "citizen_id", "session_id", "event_type", "page", "occurred_at", "duration_ms",
                  "device")
_MIDDLE_EVENTS = _weighted(("view_scheme", 55), ("start_application", 15), ("submit_application", 10),
                           ("upload_document", 20))
_DEVICES = _weighted(("android", 60), ("ios", 12), ("web", 28))


def _page(event_type: str, code: str) -> str:
    if event_type == "view_scheme":
        return f"/schemes/{code}"
    if event_type == "start_application":
        return f"/schemes/{code}/apply"
    return {"login": "/login", "logout": "/logout", "submit_application": "/applications/submit",
            "upload_document": "/applications/documents"}[event_type]


def _session_types(r: Callable[[], float], size: int, anonymous: bool) -> list[str]:
    if anonymous:
        return ["view_scheme"] * size
    middle = [_MIDDLE_EVENTS[int(r() * len(_MIDDLE_EVENTS))] for _ in range(max(size - 2, 0))]
    return (["login", *middle, "logout"] if size >= 2 else ["login"])[:size]


def _event_rows(plan: _Plan) -> Iterator[Row]:
    """About ``events_per_citizen`` events per portal citizen, in sessions on the 7 days before today."""
    rng = plan.rng("user_events")
    r, bits = rng.random, rng.getrandbits
    codes = [s.code for s in _published(plan.seed)]
    span = 2 * plan.events_per_citizen + 1
    event_id = 0
    for _, citizen_id, portal in _identities(plan):
        remaining = int(r() * span) if portal else 0
        while remaining > 0:
            size = min(remaining, 2 + int(r() * 5))
            remaining -= size
            anonymous = r() < 0.02
            who = None if anonymous else citizen_id
            session, device = f"sess-{bits(64):016x}", _DEVICES[int(r() * len(_DEVICES))]
            t_ms = (plan.today_t - (1 + int(r() * 7)) * _DAY + 6 * 3600 + int(r() * 16 * 3600)) * 1000
            for event_type in _session_types(r, size, anonymous):
                duration = 200 + int(r() * r() * 90_000)
                event_id += 1
                yield (event_id, who, session, event_type, _page(event_type, codes[int(r() * len(codes))]),
                       _ts_ms(t_ms), duration, device)
                t_ms += duration + int(r() * 20_000)


# --------------------------------------------------------------------------- feedback (last 7 days)

_FEEDBACK_COLUMNS = ("feedback_id", "citizen_id", "scheme_id", "rating", "category", "comment", "created_at")
_HAPPY = _weighted((4, 35), (5, 65))
_UNHAPPY = _weighted((1, 35), (2, 30), (3, 25), (4, 10))
_ANY_RATING = _weighted((1, 12), (2, 10), (3, 18), (4, 30), (5, 30))
_CATEGORIES = ("usability", "eligibility", "payment_delay", "documents", "grievance", "praise", "other")
# (category, comment)
_PLAIN_COMMENTS = (
    ("usability", "The application page keeps timing out on my phone."),
    ("praise", "Very easy to apply, thank you."),
    ("grievance", "Status has shown under review for weeks with no update."),
    ("usability", "Please add the form in my language."),
    ("documents", "Document upload failed twice before it worked."),
    ("praise", "Benefit amount was credited on time."),
    ("documents", "Could not find which documents are needed for this scheme."),
    ("grievance", "The helpline did not answer."),
    ("eligibility", "Not clear why I am shown as ineligible."),
)
# comments that embed one personal datum, by kind: (category, template)
_PII_TEMPLATES = {
    "phone": (("payment_delay", "Payment not received yet, please call me on {pii}."),
              ("other", "My number changed, new one is {pii}"),
              ("usability", "OTP never arrives on {pii}, cannot log in."),
              ("grievance", "Call back on {pii} after 5 pm please.")),
    "email": (("documents", "Send the list of documents to {pii} please."),
              ("grievance", "I wrote to {pii} but got no reply."),
              ("other", "Please update my contact email to {pii}")),
    "id": (("eligibility", "My Aadhaar {pii} is not linking with the bank account."),
           ("eligibility", "Application rejected even though ID {pii} is verified."),
           ("grievance", "Please check my national id {pii}, the name is wrong.")),
}
_PII_KINDS = ("phone", "email", "id")


def _comment_pii(pii: random.Random, kind: str) -> str:
    """A personal datum for prose, from value spaces the profile data never use (see module docstring)."""
    r = pii.random
    if kind == "phone":
        digits = f"6000{int(r() * 1_000_000):06d}"
        style = int(r() * 3)
        return digits if style == 0 else f"+91 {digits[:5]} {digits[5:]}" if style == 1 else \
            f"0{digits[:5]}-{digits[5:]}"
    if kind == "email":
        name = _ANY_FIRST[int(r() * len(_ANY_FIRST))].lower()
        return f"{name}.{int(r() * 10_000)}@mail.example.org"
    digits = f"9{int(r() * 10**11):011d}"
    return f"{digits[:4]} {digits[4:8]} {digits[8:]}" if r() < 0.5 else digits


def _feedback_comment(r: Callable[[], float], pii: random.Random) -> tuple[str, str | None]:
    """(category, comment): ~40% embed a personal datum, ~6% are a rating without a comment."""
    if r() < 0.4:
        kind = _PII_KINDS[int(r() * len(_PII_KINDS))]
        category, template = _PII_TEMPLATES[kind][int(r() * len(_PII_TEMPLATES[kind]))]
        return category, template.format(pii=_comment_pii(pii, kind))
    if r() < 0.1:
        return _CATEGORIES[int(r() * len(_CATEGORIES))], None
    return _PLAIN_COMMENTS[int(r() * len(_PLAIN_COMMENTS))]


def _feedback_rows(plan: _Plan) -> Iterator[Row]:
    """About one feedback per ten portal citizens, on the 7 days before today."""
    rng, pii = plan.rng("feedback"), plan.rng("feedback-pii")
    r = rng.random
    scheme_ids = [s.scheme_id for s in _published(plan.seed)]
    feedback_id = 0
    for _, citizen_id, portal in _identities(plan):
        if not portal or r() >= 0.1:
            continue
        feedback_id += 1
        category, comment = _feedback_comment(r, pii)
        ratings = _ANY_RATING if comment is None else _HAPPY if category == "praise" else _UNHAPPY
        created = plan.today_t - (1 + int(r() * 7)) * _DAY + int(r() * _DAY)
        yield (feedback_id, citizen_id, scheme_ids[int(r() * len(scheme_ids))] if r() < 0.8 else None,
               ratings[int(r() * len(ratings))], category, comment, _ts(created))


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Table:
    """One table to seed: its qualified name, the columns the generator yields, the generator."""

    name: str
    columns: tuple[str, ...]
    rows: Callable[[_Plan], Iterator[Row]]


_WAREHOUSE_PROFILES = (
    _Table("public.schemes", ("scheme_id", "code", "name", "description", "department", "category",
                              "benefit_type", "benefit_amount", "eligibility_rules", "status", "start_date",
                              "end_date", "updated_at"), _warehouse_scheme_rows),
    _Table("public.citizen_profiles", _PROFILE_COLUMNS, _profile_rows),
)
_WAREHOUSE_ALL = (
    *_WAREHOUSE_PROFILES,
    _Table("public.eligibility_predictions", _PREDICTION_COLUMNS, _prediction_rows),
    _Table("public.profile_summaries", _SUMMARY_COLUMNS, _summary_rows),
    _Table("public.application_decisions", _DECISION_COLUMNS, _decision_rows),
)
_CITIZEN_ALL = (
    _Table("public.schemes", ("scheme_id", "code", "name", "description", "category", "benefit_summary",
                              "status", "synced_at"), _portal_scheme_rows),
    _Table("public.citizens", _CITIZEN_COLUMNS, _citizen_rows),
    _Table("public.applications", _APPLICATION_COLUMNS, _application_rows),
    _Table("public.application_documents", _DOCUMENT_COLUMNS, _document_rows),
    _Table("public.user_events", _EVENT_COLUMNS, _event_rows),
    _Table("public.feedback", _FEEDBACK_COLUMNS, _feedback_rows),
)


def _ident(qualified: str) -> sql.Identifier:
    schema, name = qualified.split(".")
    return sql.Identifier(schema, name)


def _copy_table(cur: psycopg.Cursor[tuple[object, ...]], key: str, table: _Table, plan: _Plan,
                progress: Progress | None) -> int:
    """Stream one table's generator into COPY; report progress every PROGRESS_EVERY rows."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        _ident(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in table.columns))
    written = pending = 0
    with cur.copy(statement) as copy:
        write = copy.write_row
        for row in table.rows(plan):
            write(row)
            pending += 1
            if pending == PROGRESS_EVERY:
                written += pending
                pending = 0
                if progress is not None:
                    progress(key, PROGRESS_EVERY)
    if progress is not None and pending:
        progress(key, pending)
    return written + pending


def _seed_database(conn: psycopg.Connection[tuple[object, ...]], connection: str, tables: Sequence[_Table],
                   plan: _Plan, progress: Progress | None, counts: dict[str, int]) -> None:
    """Truncate the tables, then COPY each; the caller commits (or rolls back) the whole lot."""
    with mapped_errors(f"seeding {connection}"), conn.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(_ident(t.name) for t in tables)))
        for table in tables:
            key = f"{connection}.{table.name}"
            counts[key] = _copy_table(cur, key, table, plan, progress)


def seed(warehouse_dsn: str, citizen_dsn: str, citizens: int, *, seed: int = 42,
         only: Literal["all", "profiles"] = "all", progress: Progress | None = None,
         events_per_citizen: int = 5, today: date | None = None) -> SeedCounts:
    """Replace the seed data in both reference databases with ``citizens`` synthetic citizens.

    Same ``(seed, citizens)``, same data (user events and feedback: same data relative to
    ``today``, which defaults to today's UTC date). ``only="profiles"`` writes just the warehouse
    ``schemes`` and ``citizen_profiles`` and leaves the portal alone. ``progress(table, n)`` is
    called as rows are written, ``table`` being ``"connection.schema.table"``. Each database is
    seeded in one transaction; both are committed only after both are written.
    """
    if only not in ("all", "profiles"):
        raise ValueError(f"only must be 'all' or 'profiles', not {only!r}")
    if not 0 <= citizens <= _NID_SPACE or events_per_citizen < 0:
        raise ValueError(f"citizens must be 0..{_NID_SPACE} and events_per_citizen not negative")
    day = today if today is not None else datetime.now(UTC).date()
    plan = _Plan(seed, citizens, events_per_citizen, (day - _EPOCH).days * _DAY)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    with connect(warehouse_dsn, purpose="seed") as wh:
        _seed_database(wh, "warehouse", _WAREHOUSE_ALL if only == "all" else _WAREHOUSE_PROFILES, plan,
                       progress, counts)
        if only == "all":
            with connect(citizen_dsn, purpose="seed") as cz:
                _seed_database(cz, "citizen", _CITIZEN_ALL, plan, progress, counts)
    return SeedCounts(rows=counts, seconds=time.perf_counter() - started)
