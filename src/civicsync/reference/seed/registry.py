"""The reference seed's registry data: schemes, citizen profiles, eligibility predictions and
summaries (the warehouse), and the portal's citizen accounts."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from civicsync.reference.seed.values import (
    _ANCHOR_T,
    _ANY_FIRST,
    _DAY,
    _DISTRICTS,
    _EPOCH,
    _FEMALE,
    _HOUSEHOLD,
    _LANGUAGES,
    _LAST,
    _LOCALITIES,
    _MALE,
    _PROFILE_PHONE_MIN,
    _PROFILE_PHONE_SPAN,
    _SENIOR_JOBS,
    _SOCIAL,
    _WORKING_JOBS,
    _YOUNG_JOBS,
    Row,
    _day,
    _distinct,
    _identities,
    _NationalIds,
    _phone,
    _Plan,
    _ts,
    _weighted,
)

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


