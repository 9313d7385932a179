"""Small helpers shared by tests: config variants, table digests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import yaml

from civicsync.config import LoadedConfig, reference_config_path
from civicsync.config.loader import parse_config


def reference_raw() -> dict[str, Any]:
    """The reference config as a plain dict, to derive variants from."""
    raw = yaml.safe_load(reference_config_path().read_text())
    assert isinstance(raw, dict)
    return raw


def config_variant(environ: dict[str, str], mutate: Callable[[dict[str, Any]], None]) -> LoadedConfig:
    """The reference config with ``mutate`` applied to its dict, validated as usual."""
    raw = reference_raw()
    mutate(raw)
    return parse_config(raw, "variant.yaml", environ)


def digest(conn: psycopg.Connection[Any], table: str) -> str:
    """An order-independent fingerprint of a whole table's contents."""
    row = conn.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t").fetchone()
    assert row is not None
    return str(row[0])
