"""Known-value redaction: the person's own protected values, looked up in the source database.

Where a flow can know whose text it carries (a feedback row names its citizen), a rule may declare
(:class:`~civicsync.config.masking.KnownValues`) where that person's protected values live. Every
occurrence of them in the text is then redacted whatever its shape: the value's digits with any
non-letters between them ('98 76-5.4 3210', fullwidth or Devanagari digits, a zero-width space
inside), its national number under any prefix, an e-mail address in any form the normaliser undoes,
or the address's local part on its own.

:class:`KnownValueLookup` reads the values: a table of up to ``preload_max_rows`` rows is read whole
(one query per ``refresh_seconds``), a larger one is queried per key. The detector asks only for texts
that pass its prefilter, so a text without digits or '@' costs no lookup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import phonenumbers
import psycopg
from psycopg import sql

from civicsync.config.masking import KnownValues
from civicsync.transform.redact.needles import EMAIL_TOKEN, ID_TOKEN, PHONE_TOKEN, KnownNeedles, Span
from civicsync.transform.redact.normalise import normalise

Key = tuple[str | None, ...]
Connect = Callable[[], "psycopg.Connection[tuple[object, ...]]"]
"""Opens a connection to the flow's source database."""
_DIGIT_GROUP = re.compile(r"[0-9](?:[\W_]*[0-9])*")
_NON_DIGITS = re.compile(r"[^0-9]+")
_MIN_DIGITS = 6
_MIN_LOCAL = 3
_MIN_GLUED_LOCAL = 5
_MAX_PHONE_DIGITS = 11  # a longer digit value (without a phone prefix) is an id
_CACHE_LIMIT = 100_000  # per-key mode: forget everything past this many people (bounded memory)


def needles_of(values: Iterable[str | None], region: str) -> KnownNeedles:
    """The matchable forms of one person's protected values: an e-mail address as (local part,
    domain); anything with enough digits as its digits, and, for a number written with an
    international or trunk prefix, also its national number (people leave prefixes out)."""
    digits: list[tuple[str, str]] = []
    emails: list[tuple[str, str]] = []
    for value in values:
        if not value:
            continue
        text = normalise(value).text.strip()
        if "@" in text:
            local, _, domain = text.rpartition("@")
            if local and domain:
                emails.append((local.strip('"').lower(), domain.lower()))
            continue
        only = "".join(c for c in text if c.isdigit())
        if len(only) < _MIN_DIGITS:
            continue
        national = _national_number(text, only, region)
        token = PHONE_TOKEN if national is not None or len(only) <= _MAX_PHONE_DIGITS else ID_TOKEN
        digits.append((only, token))
        if national is not None and national != only and len(national) >= _MIN_DIGITS:
            digits.append((national, PHONE_TOKEN))
    return KnownNeedles(tuple(dict.fromkeys(digits)), tuple(dict.fromkeys(emails)))


def _national_number(text: str, only: str, region: str) -> str | None:
    """The national number of a value written with a '+', '00' or trunk prefix (parsed by
    libphonenumber only then: a preload reads every person's values, and most need no parsing)."""
    if not (text.startswith(("+", "00")) or (only.startswith("0") and len(only) > _MAX_PHONE_DIGITS - 1)):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return str(number.national_number) if phonenumbers.is_possible_number(number) else None


def find_known(text: str, digits_view: str, needles: KnownNeedles) -> list[Span]:
    """Spans of ``needles`` in a normalised text (``digits_view``: its digits view, spans taken blanked)."""
    spans: list[Span] = []
    if needles.emails:
        spans += _email_spans(text, needles.emails)
    if needles.digits:
        # Most texts hold none of this person's numbers: one pass over all their digits says so.
        everything = _NON_DIGITS.sub("", digits_view)
        wanted = [(d, t) for d, t in needles.digits if d in everything]
        if wanted:
            for group in _DIGIT_GROUP.finditer(digits_view):
                spans += _digit_spans(group.group(), group.start(), wanted)
    return spans


def _occurrences(haystack: str, needle: str) -> Iterator[int]:
    at = haystack.find(needle)
    while at >= 0:
        yield at
        at = haystack.find(needle, at + 1)


def _email_spans(text: str, emails: Sequence[tuple[str, str]]) -> list[Span]:
    """The person's addresses, and their local parts on their own: plain string search (no regular
    expression per person: compiling one per row costs more than the whole rest of the redaction)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: offsets would shift
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    spans: list[Span] = []
    for local, domain in emails:
        address = f"{local}@{domain}"
        spans += [(at, at + len(address), EMAIL_TOKEN) for at in _occurrences(lowered, address)]
        if len(local) < _MIN_LOCAL:
            continue
        for at in _occurrences(lowered, local):
            end = at + len(local)
            # Long enough to be this person's: anywhere, even glued to other words; short: a word of its own.
            if len(local) >= _MIN_GLUED_LOCAL or (
                    (at == 0 or not _in_word(lowered[at - 1])) and (end == len(lowered) or not _in_word(lowered[end]))):
                spans.append((at, end, EMAIL_TOKEN))
    return spans


def _in_word(c: str) -> bool:
    return c.isalnum() or c in "._+-"


def _digit_spans(group: str, offset: int, needles: Sequence[tuple[str, str]]) -> list[Span]:
    only = group if group.isdigit() else _NON_DIGITS.sub("", group)
    if not any(needle in only for needle, _ in needles):
        return []
    positions = [offset + i for i, c in enumerate(group) if c.isdigit()]
    spans: list[Span] = []
    for needle, token in needles:
        at = only.find(needle)
        while at >= 0:
            spans.append((positions[at], positions[at + len(needle) - 1] + 1, token))
            at = only.find(needle, at + 1)
    return spans


class KnownValueLookup:
    """Key (the flow's ``match`` source columns) → that person's needles, from the source database."""

    def __init__(self, spec: KnownValues, connect: Connect, region: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.region = region
        self._connect = connect
        self._clock = clock
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._cache: dict[Key, KnownNeedles] = {}
        self._preloaded = False
        self._loaded_at: float | None = None

    def needles(self, key: Key) -> KnownNeedles | None:
        """The needles of the person ``key`` names (None: no such person, or no protected value)."""
        if None in key:
            return None
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at > self.spec.refresh_seconds:
            self._refresh(now)
        if key not in self._cache:
            # Per-key mode, or a person who arrived after the table was read: ask for that one.
            if not self._preloaded and len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = self._query_one(key)
            if self._preloaded:
                self.close()  # a rare miss: no need to hold a connection for the next one
        found = self._cache[key]
        return found if found else None

    def cached(self, key: Key) -> KnownNeedles | None:
        """The needles of ``key`` if they are at hand without a query (a preloaded table, or a key
        looked up before); None otherwise."""
        if None in key or self._loaded_at is None:
            return None
        return self._cache.get(key) or None

    def close(self) -> None:
        """Close the lookup's connection (it reopens on the next lookup)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        # A transform has no end-of-use hook: the lookup closes its connection when it is dropped.
        self.close()

    # ------------------------------------------------------------------ database

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.autocommit = True
        return self._conn

    def _select(self) -> sql.Composed:
        schema, table = self.spec.table.split(".")
        cols = [*self.spec.match.values(), *self.spec.columns]
        return sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
            sql.Identifier(schema, table))

    def _refresh(self, now: float) -> None:
        self._cache = {}
        self._loaded_at = now
        conn = self._connection()
        limit = self.spec.preload_max_rows
        counted = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) t").format(
            sql.Identifier(*self.spec.table.split("."))), (limit + 1,)).fetchone()
        self._preloaded = counted is not None and int(str(counted[0])) <= limit
        if not self._preloaded:
            return
        width = len(self.spec.match)
        # COPY: the whole table in large blocks (a row-by-row stream costs a round trip per row).
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(self._select())) as copy:
            for row in copy.rows():
                texts = [None if v is None else str(v) for v in row]
                self._cache[tuple(texts[:width])] = needles_of(texts[width:], self.region)
        self.close()  # everything is in memory; a person added later reopens it for one query

    def _query_one(self, key: Key) -> KnownNeedles:
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = %s").format(sql.Identifier(c)) for c in self.spec.match.values())
        row = self._connection().execute(sql.SQL("{} WHERE {} LIMIT 1").format(self._select(), where),
                                         key).fetchone()
        if row is None:
            return KnownNeedles()
        width = len(self.spec.match)
        return needles_of([None if v is None else str(v) for v in row[width:]], self.region)
