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

from civicsync.reference.seed.values import ANCHOR, PROGRESS_EVERY, SeedCounts
from civicsync.reference.seed.writing import seed

__all__ = ["ANCHOR", "PROGRESS_EVERY", "SeedCounts", "seed"]
