"""Column mappings: how each target column's value is derived from a source row.

A mapping is compiled once per run into a small function over the source row (PostgreSQL text
values). Order inside one column: take the value (from / const / template / run_time), apply the
value map, then the mask. Masking is therefore always the last word on what leaves the source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from civicsync.config.masking import JsonMask, MaskSpec, RedactMask, known_values_of
from civicsync.config.models import ColumnSpec
from civicsync.config.references import template_fields
from civicsync.errors import RowRejectedError
from civicsync.transform.masking import build_keyed_masker, build_masker
from civicsync.transform.redact.detect import Detector
from civicsync.transform.redact.known import Connect, KnownValueLookup

Row = Sequence[str | None]
ColumnFn = Callable[[Row], str | None]


def _const_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _value_fn(spec: ColumnSpec, index: Mapping[str, int], run_time: str) -> ColumnFn:
    if spec.from_ is not None:
        i = index[spec.from_]
        return lambda row: row[i]
    if spec.template is not None:
        template = spec.template
        positions = {name: index[name] for name in template_fields(template)}
        return lambda row: template.format_map({n: row[i] or "" for n, i in positions.items()})
    if spec.run_time:
        return lambda row: run_time
    const = None if spec.const is None else _const_text(spec.const)
    return lambda row: const


def _mapped(target: str, spec: ColumnSpec, inner: ColumnFn) -> ColumnFn:
    if spec.map is None:
        return inner
    table = dict(spec.map)
    default = spec.default

    def mapped(row: Row) -> str | None:
        value = inner(row)
        if value is None:
            return None
        if value in table:
            return table[value]
        if default is not None:
            return default
        # Never echo the value: it may be personal data.
        raise RowRejectedError("map", f"column {target}: value not in the value map and no default is set")

    return mapped


def compile_column(
    target: str, spec: ColumnSpec, index: Mapping[str, int], secrets: Mapping[str, bytes], run_time: str,
    connect_source: Connect | None = None,
) -> ColumnFn:
    """The function that computes target column ``target`` from a source row.

    ``connect_source`` opens a connection to the flow's source database; a mask that declares
    ``known_values`` needs it (ValueError without it: known-value redaction is never silently off)."""
    fn = _mapped(target, spec, _value_fn(spec, index, run_time))
    if spec.mask is None:
        return fn
    if known_values_of(spec.mask) is None:
        mask = build_masker(spec.mask, secrets)
        return lambda row: mask(fn(row))
    if connect_source is None:
        raise ValueError(f"column {target}: known-value redaction needs access to the flow's source database")
    return _known_values_column(spec.mask, fn, index, secrets, connect_source)


def _known_values_column(mask: MaskSpec, fn: ColumnFn, index: Mapping[str, int], secrets: Mapping[str, bytes],
                         connect_source: Connect) -> ColumnFn:
    """A masked column that also redacts the person's own values (looked up only for texts that
    could hold one)."""
    redact = mask if isinstance(mask, RedactMask) else mask.redact if isinstance(mask, JsonMask) else None
    assert redact is not None and redact.known_values is not None
    keyed = build_keyed_masker(mask, secrets)
    detector = Detector(redact)
    lookup = KnownValueLookup(redact.known_values, connect_source, redact.region)
    positions = [index[c] for c in redact.known_values.match]
    first, single = positions[0], len(positions) == 1
    # A plain redaction leaves a text without candidates as it is: no need to call it for those.
    untouched_if_clean = isinstance(mask, RedactMask) and all(isinstance(p, str) for p in mask.patterns)

    def column(row: Row) -> str | None:
        value = fn(row)
        if value is None:
            return None
        key = (row[first],) if single else tuple([row[i] for i in positions])
        if detector.candidate(value):
            needles = lookup.needles(key)
            if needles is not None and not needles.may_be_in(value):
                needles = None
            # A plain redaction straight to its detector: the prefilter has been passed already.
            return detector.redact(value, needles, checked=True) if untouched_if_clean else keyed(value, needles)
        # No digits, no '@': only an e-mail's local part on its own could be there; look only if that
        # costs no query, and redact only if the text mentions one.
        needles = lookup.cached(key)
        if needles is not None and needles.mentioned_in(value):
            return keyed(value, needles)
        return value if untouched_if_clean else keyed(value, None)

    return column
