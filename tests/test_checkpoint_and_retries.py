"""The event path's checkpoint only moves forward, and its retry settings come from the config
(issue 12, Required 2: part of it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicsync.control import store
from civicsync.errors import CheckpointRegressionError, ConfigDeprecationWarning, ConfigError
from civicsync.retry import backoff_delays
from fix_db import Deployment
from helpers import config_variant

ENV = {"CIVICSYNC_WAREHOUSE_DSN": "host=x", "CIVICSYNC_CITIZEN_DSN": "host=x", "CIVICSYNC_PSEUDONYM_KEY": "k" * 20}
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.integers(0, 2**40), min_size=1, max_size=8))
def test_the_stored_position_never_moves_back(deployment: Deployment, steps: list[int]) -> None:
    slot = f"checkpoint_{abs(hash(tuple(steps))) % 10**9}"
    with deployment.connect("citizen") as conn:
        conn.execute("DELETE FROM civicsync.cdc_positions WHERE slot = %s", (slot,))
        highest = 0
        for lsn in steps:
            if lsn < highest:
                with pytest.raises(CheckpointRegressionError) as refused, conn.transaction():
                    store.write_position(conn, slot, lsn, NOW)
                assert refused.value.stored == highest and refused.value.lsn == lsn
            else:
                store.write_position(conn, slot, lsn, NOW)  # the same position again is fine
                highest = lsn
            assert store.read_position(conn, slot) == highest


def test_the_retry_defaults_are_the_values_that_were_built_in() -> None:
    retries = config_variant(ENV, lambda raw: None).model.retries
    assert backoff_delays(retries.target_commit)[:3] == [0.2, 0.4, 0.8] and retries.target_commit.attempts == 30
    assert retries.target_commit.max_delay == 10.0
    assert (retries.source_reconnect.attempts, retries.source_reconnect.max_delay) == (100, 5.0)
    assert backoff_delays(retries.dead_letters)[:3] == [1.0, 2.0, 4.0] and retries.dead_letters.max_delay == 300.0


def test_retry_settings_are_read_from_the_config_and_checked() -> None:
    def fast(raw: dict[str, Any]) -> None:
        raw["retries"] = {"target_commit": {"attempts": 2, "initial_delay": 0.01},
                          "dead_letters": {"initial_delay": 5, "max_delay": 60}}

    retries = config_variant(ENV, fast).model.retries
    assert retries.target_commit.attempts == 2 and backoff_delays(retries.target_commit) == [0.01]
    assert backoff_delays(retries.dead_letters)[:2] == [5.0, 10.0]
    assert retries.source_reconnect.attempts == 100  # untouched settings keep their defaults

    def wrong(raw: dict[str, Any]) -> None:
        raw["retries"] = {"target_commit": {"attempts": 0}, "sometimes": {}}

    with pytest.raises(ConfigError) as bad:
        config_variant(ENV, wrong)
    text = str(bad.value)
    assert "retries.target_commit.attempts" in text and "retries.sometimes" in text


def test_an_event_path_flow_needs_no_empty_cdc_section_and_old_files_still_load() -> None:
    # The reference config no longer writes 'cdc: {}'; a file that does (the old form) still loads
    # to the same flow; a batch flow with a cdc section is still refused.
    new = config_variant(ENV, lambda raw: None).model
    streaming = [name for name, flow in new.flows.items() if flow.streams]
    assert streaming and all(new.flows[n].cdc is not None for n in streaming)

    def old_form(raw: dict[str, Any]) -> None:
        for name in streaming:
            raw["flows"][name].setdefault("cdc", {})

    with pytest.warns(ConfigDeprecationWarning, match=r"an empty 'cdc: \{\}' is no longer needed"):
        old = config_variant(ENV, old_form).model
    assert all(old.flows[n] == new.flows[n] for n in streaming)

    def cdc_on_batch(raw: dict[str, Any]) -> None:
        batch = next(n for n, f in raw["flows"].items() if f["kind"] == "batch")
        raw["flows"][batch]["cdc"] = {}

    with pytest.raises(ConfigError, match="only kinds cdc and hybrid take a 'cdc' section"):
        config_variant(ENV, cdc_on_batch)
