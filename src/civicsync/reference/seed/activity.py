"""The reference seed's activity data: applications and their documents, decisions (warehouse),
the last week's click stream and feedback."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import NamedTuple

from civicsync.reference.seed.registry import _published, _schemes
from civicsync.reference.seed.values import (
    _ANCHOR_T,
    _ANY_FIRST,
    _DAY,
    _LAST,
    Row,
    _distinct,
    _identities,
    _NationalIds,
    _phone,
    _Plan,
    _ts,
    _ts_ms,
    _uuid,
    _weighted,
)

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


