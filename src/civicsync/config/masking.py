"""Pydantic models of the masking rules a column (or a JSON member, or an aggregate dimension) declares.

Re-exported by :mod:`civicsync.config.models`; the engine's one implementation is
:mod:`civicsync.transform.masking` (with :mod:`civicsync.transform.redact` for free text).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from civicsync.config.base import Model


class KeepLastMask(Model):
    """Keep the last ``n`` characters; the rest becomes ``template`` with ``{last}`` filled in,
    or ``mask_char`` repeated when no template is given."""

    kind: Literal["keep_last"]
    n: int = Field(default=4, ge=0, le=64)
    mask_char: str = Field(default="X", min_length=1, max_length=1)
    template: str | None = Field(default=None, description="e.g. 'XXXX-XXXX-{last}'")

    @field_validator("template")
    @classmethod
    def _has_placeholder(cls, template: str | None) -> str | None:
        if template is not None and "{last}" not in template:
            raise ValueError("template must contain {last}")
        return template


class HmacMask(Model):
    """Keyed pseudonym: HMAC-SHA256 of the value with a secret; stable, not reversible."""

    kind: Literal["hmac"]
    secret: str = Field(description="name of an entry in the top-level secrets")
    length: int = Field(default=32, ge=16, le=64, description="hex characters kept")
    prefix: str = ""


RedactPatternName = Literal["phone", "email", "national_id"]
DEFAULT_REDACTIONS: tuple[RedactPatternName, ...] = ("email", "national_id", "phone")


class CustomPattern(Model):
    """A regular expression to redact, with the token that replaces each match."""

    regex: str
    token: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return regex


class NationalIdShape(Model):
    """What a national id looks like in text: this many digits, in any grouping."""

    lengths: list[int] = Field(default_factory=lambda: [12], min_length=1,
                               description="digit counts of an id (Aadhaar: 12); any grouping and separators")
    long_numbers: bool = Field(
        default=True,
        description="also redact any longer digit run (a card or account number holds an id-length window)")

    @field_validator("lengths")
    @classmethod
    def _sane(cls, lengths: list[int]) -> list[int]:
        if any(n < 6 or n > 32 for n in lengths):
            raise ValueError("id lengths must be between 6 and 32 digits (shorter runs are ordinary numbers)")
        return sorted(set(lengths))


class KnownValues(Model):
    """The person's own protected values, looked up in the flow's source database: every occurrence of
    them in that person's text is redacted, whatever its shape (digits across any separators, an
    e-mail address in any written form, its local part on its own).

    ``match`` joins a source row of the flow to one row of ``table`` (same source connection);
    ``columns`` are that row's protected values. A value holding '@' is matched as an e-mail, a value
    with at least 6 digits by its digits; other values are ignored."""

    table: str = Field(description="schema.table in the flow's source connection, e.g. public.citizens")
    match: dict[str, str] = Field(min_length=1, description="source column of the flow: column of table")
    columns: list[str] = Field(min_length=1, description="columns of table whose values are protected")
    preload_max_rows: int = Field(
        default=500_000, ge=0,
        description="a table up to this many rows is read whole into memory (one query per refresh); a larger "
                    "one is queried per key, and only for texts that could hold a value")
    refresh_seconds: float = Field(default=300.0, gt=0, description="how long looked-up values are trusted")

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        if table.count(".") != 1:
            raise ValueError(f"table {table!r} must be written as schema.table")
        return table


PhoneLeniency = Literal["possible", "valid", "strict_grouping", "exact_grouping"]


class RedactMask(Model):
    """Replace personal data inside free text with tokens ([EMAIL], [ID], [PHONE]).

    Text is normalised before detection (NFKC, every Unicode digit as ASCII, zero-width and format
    characters removed, separators between digits ignored); matches are replaced in the original text."""

    kind: Literal["redact"] = "redact"
    patterns: list[RedactPatternName | CustomPattern] = Field(
        default_factory=lambda: list[RedactPatternName | CustomPattern](DEFAULT_REDACTIONS), min_length=1
    )
    region: str = Field(default="IN", description="default phone region (ISO 3166 code) for numbers without '+'")
    phone_leniency: PhoneLeniency = Field(
        default="valid",
        description="libphonenumber leniency: 'valid' takes numbers that are valid for their region in any "
                    "grouping ('possible' also takes dates and amounts)")
    national_id: NationalIdShape = Field(default_factory=NationalIdShape)
    known_values: KnownValues | None = None

    @field_validator("region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        import phonenumbers

        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{region!r} is not a phone region libphonenumber knows (e.g. IN, GB, US)")
        return region


class Band(Model):
    """One band: values below ``below`` (exclusive) get ``label``; the last band has no bound."""

    below: float | None = None
    label: str


class BandMask(Model):
    """Replace a number by the label of the band it falls in (money → '10k-50k')."""

    kind: Literal["band"]
    bands: list[Band] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> BandMask:
        bounds = [b.below for b in self.bands]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last band may have no 'below' bound")
        finite = [b for b in bounds if b is not None]
        if finite != sorted(finite) or len(set(finite)) != len(finite):
            raise ValueError("band bounds must be strictly ascending")
        return self


class DropMask(Model):
    """The value never leaves its database: the target receives NULL."""

    kind: Literal["drop"]


class Vocabulary(Model):
    """A closed set of values: a value passes only if it is one of ``values`` (compared ignoring case,
    surrounding spaces and '-'/'_'/space differences, written out as declared); anything else becomes
    ``default``. Free text therefore never passes as a category."""

    values: list[str] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict, description="other spellings: alias → one of values")
    default: str = Field(default="OTHER", description="what any other value becomes")

    @model_validator(mode="after")
    def _aliases_point_inside(self) -> Vocabulary:
        unknown = sorted(set(self.aliases.values()) - set(self.values))
        if unknown:
            raise ValueError(f"aliases map to {unknown}, which are not among values")
        return self


class VocabularyMask(Vocabulary):
    """A categorical column (or JSON member) that passes only a declared vocabulary."""

    kind: Literal["vocabulary"]


JsonMemberRule = Literal["keep", "text"]
"""``keep``: a scalar passes as it is; ``text``: a string passes with its free text redacted."""


class JsonMask(Model):
    """A json/jsonb document that denies by default.

    ``paths`` declares the members that pass, by dotted path ('bank.account_number',
    'nominees.relation'; arrays are transparent, keys match whatever their case or spelling:
    'nationalId', 'National_ID' and 'national-id' are one key): ``keep`` (a scalar as it is),
    ``text`` (a string, redacted) or a mask. Every other member is dropped (``undeclared: drop``,
    the default) or kept with its strings redacted, long digit runs hidden and numbers removed
    (``undeclared: redact``). A string member holding a JSON document is masked as a document."""

    kind: Literal["json"]
    paths: dict[str, JsonMemberRule | MaskSpec] = Field(min_length=1)
    undeclared: Literal["drop", "redact"] = "drop"
    redact: RedactMask = Field(default_factory=RedactMask,
                               description="how text members (and undeclared members under 'redact') are redacted")

    @field_validator("paths")
    @classmethod
    def _segments(cls, paths: dict[str, object]) -> dict[str, object]:
        for path in paths:
            if path != "$" and not all(path.split(".")):
                raise ValueError(f"path {path!r} has an empty segment")
        return paths


MaskSpec = Annotated[
    KeepLastMask | HmacMask | RedactMask | BandMask | DropMask | VocabularyMask | JsonMask,
    Field(discriminator="kind"),
]
JsonMask.model_rebuild()


def known_values_of(mask: MaskSpec | None) -> KnownValues | None:
    """The known-value lookup a mask declares (a redact mask, or the redaction of a json mask)."""
    if isinstance(mask, RedactMask):
        return mask.known_values
    if isinstance(mask, JsonMask):
        return mask.redact.known_values
    return None


class PiiAudit(Model):
    """The scheduled ``audit pii`` run of the service (``civicsync run``)."""

    schedule: str | None = Field(default="30 4 * * *",
                                 description="cron, UTC; null: only run by hand (`civicsync audit pii`)")


class Audit(Model):
    """Masking validation settings."""

    pii: PiiAudit = Field(default_factory=PiiAudit)
