"""Issue 12 item 4, the config warts: the older forms (``mode:``, an empty ``cdc: {}``, ``$lsn``, a write-only
table's columns declared again) still load, each with a deprecation warning naming the new form; ambiguous
ones fail (exit 2, a message saying what to write, no traceback); ``config migrate`` rewrites an old file
into one that loads without warnings to the same config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from civicsync.cli.app import app
from civicsync.config import load_config, reference_config_path
from civicsync.config.loader import LoadedConfig, parse_config
from civicsync.errors import ConfigDeprecationWarning, ConfigError
from helpers import reference_raw

LEGACY = Path(__file__).parent / "data" / "civicsync-v1-legacy.yaml"
ENV = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c", "CIVICSYNC_PSEUDONYM_KEY": "k" * 32}


def load_quietly(raw: dict[str, Any]) -> LoadedConfig:
    """Load, failing on any deprecation warning (the current form must need none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        return parse_config(raw, "conf.yaml", ENV)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": os.environ["PATH"], "COLUMNS": "250"}, timeout=120, check=False)


def test_the_reference_config_uses_the_current_form_only() -> None:
    text = reference_config_path().read_text()
    assert "mode:" not in text and "$lsn" not in text and "cdc: {}" not in text
    assert load_quietly(reference_raw()).deprecations == ()


def test_the_old_reference_file_loads_to_the_same_config_and_warns_about_every_old_form() -> None:
    with pytest.warns(ConfigDeprecationWarning) as caught:
        old = load_config(LEGACY, environ=ENV)
    new = load_config(environ=ENV)
    assert old.model == new.model
    paths = {d.path for d in old.deprecations}
    assert {"flows.scheme_master.mode", "flows.profile_prefill.mode", "flows.profile_summary.mode",
            "flows.application_submissions.cdc.event_log.columns.source_lsn", "flows.document_metadata.cdc",
            "connections.warehouse.tables.public.applications.columns"} <= paths
    assert len(caught) == len(old.deprecations)
    assert all(str(LEGACY) in str(w.message) for w in caught)


def _flow(raw: dict[str, Any], name: str) -> dict[str, Any]:
    flow: dict[str, Any] = raw["flows"][name]
    return flow


def _event_log(raw: dict[str, Any]) -> dict[str, Any]:
    log: dict[str, Any] = _flow(raw, "application_submissions")["cdc"]["event_log"]
    return log


def _lsn_entry(raw: dict[str, Any]) -> None:
    log = _event_log(raw)
    del log["position_column"]
    log["columns"]["source_lsn"] = "$lsn"


def _duplicated(raw: dict[str, Any]) -> None:
    raw["connections"]["citizen"]["tables"]["public.eligibility_hints"]["columns"] = [
        "citizen_id", "scheme_id", "rank", "score_band", "reasons", "updated_at"]


OLD_FORMS = [
    (lambda raw: _flow(raw, "scheme_master").update(mode="full"), "flows.scheme_master.mode",
     "'mode: full' is no longer written: a batch flow without an 'incremental' section is a full sync"),
    (lambda raw: _flow(raw, "feedback").update(mode="incremental"), "flows.feedback.mode",
     "'mode: incremental' is no longer written: the 'incremental' section says it"),
    (lambda raw: _flow(raw, "profile_summary").update(mode="incremental"), "flows.profile_summary.mode",
     "remove 'mode'"),
    (lambda raw: _flow(raw, "eligibility_hints").update(mode="full"), "flows.eligibility_hints.mode",
     "a cdc flow without an 'incremental' section has no mode"),
    (lambda raw: _flow(raw, "document_metadata").update(cdc={}), "flows.document_metadata.cdc",
     "an empty 'cdc: {}' is no longer needed"),
    (_lsn_entry, "flows.application_submissions.cdc.event_log.columns.source_lsn",
     "use 'position_column: source_lsn' in event_log"),
    (_duplicated, "connections.citizen.tables.public.eligibility_hints.columns",
     "leave 'columns' out, they are derived"),
]


@pytest.mark.parametrize(("old_form", "path", "says"), OLD_FORMS, ids=[p for _, p, _ in OLD_FORMS])
def test_each_old_form_loads_with_a_warning_naming_the_new_form(old_form: Any, path: str, says: str) -> None:
    raw = reference_raw()
    old_form(raw)
    with pytest.warns(ConfigDeprecationWarning) as caught:
        loaded = parse_config(raw, "conf.yaml", ENV)
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"conf.yaml: {path}: ") and says in message, message
    assert "civicsync config migrate" in message
    assert loaded.model == load_quietly(reference_raw()).model


AMBIGUOUS = [
    (lambda raw: _flow(raw, "profile_prefill").update(mode="full"), "flows.profile_prefill.mode",
     "'mode: full' contradicts the 'incremental' section: remove 'mode'"),
    (lambda raw: _flow(raw, "scheme_master").update(mode="incremental"), "flows.scheme_master.mode",
     "write 'incremental: {column: <source column>}'"),
    (lambda raw: _flow(raw, "profile_summary").update(mode="full"), "flows.profile_summary.mode",
     "contradicts kind hybrid"),
    (lambda raw: _flow(raw, "decision_updates").update(mode="incremental"), "flows.decision_updates.mode",
     "contradicts kind cdc"),
    (lambda raw: _flow(raw, "scheme_master").update(mode="nightly"), "flows.scheme_master.mode",
     "'nightly' was never a mode: remove it"),
    (lambda raw: _event_log(raw)["columns"].update(occurred_lsn="$lsn"),
     "flows.application_submissions.cdc.event_log.columns.occurred_lsn",
     "$lsn contradicts 'position_column: source_lsn'"),
    (lambda raw: (_lsn_entry(raw), _event_log(raw)["columns"].update(other="$lsn")),
     "flows.application_submissions.cdc.event_log.columns", "source_lsn, other all map to $lsn: keep one"),
]


@pytest.mark.parametrize(("old_form", "path", "says"), AMBIGUOUS, ids=[s for _, _, s in AMBIGUOUS])
def test_an_ambiguous_old_form_fails_saying_what_to_write(old_form: Any, path: str, says: str) -> None:
    raw = reference_raw()
    old_form(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    assert any(str(p).startswith(f"conf.yaml: {path}: ") and says in str(p) for p in info.value.problems), \
        info.value.problems


def test_an_ambiguous_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    raw = yaml.safe_load(LEGACY.read_text())
    raw["flows"]["scheme_master"]["incremental"] = {"column": "updated_at"}  # next to its 'mode: full'
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = cli("config", "migrate", str(LEGACY), "-o", str(tmp_path / "no" / "such" / "dir.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    for args in (("validate", str(bad), "--no-secrets"), ("config", "migrate", str(bad))):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "flows.scheme_master.mode: 'mode: full' contradicts the 'incremental' section" in proc.stderr


def test_config_migrate_round_trips(tmp_path: Path) -> None:
    migrated = tmp_path / "new.yaml"
    proc = cli("config", "migrate", str(LEGACY), "-o", str(migrated), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "YAML comments of the original are not kept" in proc.stderr
    assert "changed flows.scheme_master.mode" in proc.stderr and "Traceback" not in proc.stderr
    text = migrated.read_text()
    assert "mode:" not in text and "$lsn" not in text and "position_column: source_lsn" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        again = load_config(migrated, environ=ENV)
    with pytest.warns(ConfigDeprecationWarning):
        assert again.model == load_config(LEGACY, environ=ENV).model
    # A current file is left as it is (comments and all), and the warnings now say nothing more to do.
    proc = cli("config", "migrate", str(reference_config_path()), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == reference_config_path().read_text()
    assert "already in the current form" in proc.stderr
    proc = cli("validate", str(migrated), "--no-secrets", cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    proc = cli("validate", str(LEGACY), "--no-secrets", cwd=tmp_path)
    assert proc.returncode == 0 and "warning: " in proc.stderr and "Traceback" not in proc.stderr


def test_flow_mode_is_derived_from_the_incremental_section() -> None:
    model = load_quietly(reference_raw()).model
    modes = {n: f.mode for n, f in model.flows.items() if f.batches}
    assert modes == {"scheme_master": "full", "profile_prefill": "incremental", "user_behaviour": "full",
                     "feedback": "incremental", "profile_summary": "incremental"}
    result = CliRunner().invoke(app, ["flows", "--json"], env={"CIVICSYNC_CONFIG": None, **ENV})
    assert result.exit_code == 0, result.output
    assert {r["flow"]: r["mode"] for r in json.loads(result.output) if r["flow"] in modes} == modes


def test_derived_columns_of_write_only_tables() -> None:
    model = load_quietly(reference_raw()).model
    tables = model.connections["warehouse"].tables
    assert tables["public.application_events"].columns == [
        "event_id", "application_id", "event_type", "occurred_at", "source_lsn"]
    assert tables["public.profile_change_requests"].columns == [
        "id", "citizen_id", "field", "old_value", "new_value", "requested_at", "status"]
    assert model.connections["citizen"].tables["public.eligibility_hints"].columns == [
        "citizen_id", "scheme_id", "score_band", "reasons", "updated_at", "rank"]


@pytest.mark.parametrize(("connection", "table", "reader"), [
    ("warehouse", "public.schemes", "flows.scheme_master.source"),
    ("citizen", "public.citizens", "flows.user_behaviour.aggregate.join"),
    ("citizen", "public.scheme_forecasts", "service.api.forecasts"),
])
def test_a_table_that_is_read_must_list_its_columns(connection: str, table: str, reader: str) -> None:
    raw = reference_raw()
    del raw["connections"][connection]["tables"][table]["columns"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    assert [str(p) for p in info.value.problems] == [
        f"conf.yaml: connections.{connection}.tables.{table}.columns: required: {reader} reads this table, so its "
        "columns cannot be derived; list them"]


@pytest.mark.parametrize(("mutate", "says"), [
    (lambda raw: raw["connections"]["warehouse"]["tables"]["public.applications"].update(columns=[]),
     "columns must list at least one column"),
    (lambda raw: _event_log(raw)["columns"].update(source_lsn="updated_at"), "both position_column and in columns"),
    (lambda raw: _event_log(raw)["columns"].update(at_lsn="$position"), "is not a column mapped by this flow"),
    (lambda raw: _flow(raw, "user_behaviour").update(incremental={"column": "occurred_at"}),
     "'incremental' does not apply to kind aggregate"),
    (lambda raw: _flow(raw, "feedback").update(on_missing="delete"), "on_missing only applies to a full sync"),
])
def test_the_new_forms_refuse_what_they_cannot_mean(mutate: Any, says: str) -> None:
    raw = reference_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    assert any(says in str(p) for p in info.value.problems), info.value.problems


def test_a_write_only_table_declared_in_full_keeps_its_check() -> None:
    """Columns listed beyond what the config writes are a declaration, not a duplicate: no warning, and
    a flow writing a column the list lacks is still caught."""
    raw = reference_raw()
    raw["connections"]["warehouse"]["tables"]["public.application_events"]["columns"] = [
        "event_id", "application_id", "event_type", "occurred_at", "source_lsn", "note"]
    assert load_quietly(raw).deprecations == ()
    raw["connections"]["warehouse"]["tables"]["public.application_events"]["columns"].remove("source_lsn")
    with pytest.raises(ConfigError, match=r"event_log\.position_column: column .source_lsn. is not declared"):
        parse_config(raw, "conf.yaml", ENV)


SECOND = """
version: 1
service: {api: {enabled: false}}
connections:
  registry:
    dsn_env: REG_DSN
    tables:
      civil.people: {key: [person_no], columns: [person_no, given, family, state, touched]}
  portal:
    dsn_env: PORTAL_DSN
    tables:
      site.residents: {key: [resident_no]}
      site.resident_log: {key: [log_no]}
flows:
  residents:
    id: D1
    kind: batch
    schedule: "5 4 * * *"
    source: {connection: registry, table: civil.people}
    target: {connection: portal, table: site.residents}
    incremental: {column: touched, guard: none}
    columns: {resident_no: person_no, name: {template: "{given} {family}"}, at: touched}
  residents_live:
    id: D2
    kind: cdc
    source: {connection: registry, table: civil.people}
    target: {connection: portal, table: site.residents}
    columns: {resident_no: person_no, state: state}
    cdc:
      event_log: {table: site.resident_log, on_change_of: state, columns: {state: state, who: resident_no},
                  position_column: lsn}
"""


def test_a_second_department_config_with_other_names_loads_in_the_new_form() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        loaded = parse_config(yaml.safe_load(SECOND), "dept.yaml", {"REG_DSN": "dbname=r", "PORTAL_DSN": "dbname=p"})
    model = loaded.model
    assert model.flow("D1").mode == "incremental" and model.flow("D2").mode == "full"
    log = model.flow("D2").cdc.event_log if model.flow("D2").cdc else None
    assert log is not None and log.recorded == {"state": "state", "who": "resident_no", "lsn": None}
    tables = model.connections["portal"].tables
    assert tables["site.residents"].columns == ["resident_no", "name", "at", "state"]
    assert tables["site.resident_log"].columns == ["log_no", "state", "who", "lsn"]
