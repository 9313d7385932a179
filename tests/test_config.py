"""Config loading: the reference config is valid; every class of mistake is reported clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from civicsync.config import load_config, reference_config_path
from civicsync.config.loader import parse_config
from civicsync.errors import ConfigError
from helpers import reference_raw

ENV = {
    "CIVICSYNC_WAREHOUSE_DSN": "dbname=w",
    "CIVICSYNC_CITIZEN_DSN": "dbname=c",
    "CIVICSYNC_PSEUDONYM_KEY": "k" * 32,
}


def problems_of(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV if environ is None else environ)
    return [str(p) for p in info.value.problems]


def test_reference_config_is_valid() -> None:
    loaded = load_config(environ=ENV)
    assert {f.id for f in loaded.model.flows.values()} >= {"F1", "F2", "F11", "F12"}
    assert loaded.secrets["pseudonym_key"] == b"k" * 32
    assert loaded.model.flow("f2").id == "F2"


def test_unknown_key_is_named_with_its_path() -> None:
    raw = reference_raw()
    raw["flows"]["scheme_master"]["filtres"] = []
    assert problems_of(raw) == ["conf.yaml: flows.scheme_master.filtres: unknown key (misspelt?)"]


def test_unknown_masking_kind() -> None:
    raw = reference_raw()
    raw["flows"]["feedback"]["columns"]["comment"]["mask"] = {"kind": "scramble"}
    [problem] = problems_of(raw)
    assert problem.startswith("conf.yaml: flows.feedback.columns.comment.mask: ")
    assert "scramble" in problem and "keep_last" in problem


def test_wrong_type() -> None:
    raw = reference_raw()
    raw["flows"]["profile_prefill"]["retry"] = {"attempts": "many"}
    [problem] = problems_of(raw)
    assert problem.startswith("conf.yaml: flows.profile_prefill.retry.attempts: ")
    assert "integer" in problem


def test_missing_env_vars_are_reported() -> None:
    problems = problems_of(reference_raw(), {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w"})
    assert problems == [
        "conf.yaml: connections.citizen.dsn_env: environment variable CIVICSYNC_CITIZEN_DSN is not set",
        "conf.yaml: secrets.pseudonym_key.env: environment variable CIVICSYNC_PSEUDONYM_KEY is not set",
    ]


def test_short_secret_is_refused() -> None:
    problems = problems_of(reference_raw(), {**ENV, "CIVICSYNC_PSEUDONYM_KEY": "short"})
    assert problems == ["conf.yaml: secrets.pseudonym_key.env: environment variable CIVICSYNC_PSEUDONYM_KEY "
                        "is shorter than 16 characters"]


def test_undeclared_table_and_columns() -> None:
    raw = reference_raw()
    f2 = raw["flows"]["profile_prefill"]
    f2["columns"]["nickname"] = "full_name"
    f2["columns"]["phone"] = "mobile"
    f2["filters"] = [{"column": "caste", "op": "eq", "value": "x"}]
    raw["flows"]["scheme_master"]["target"]["table"] = "public.programmes"
    problems = problems_of(raw)
    assert "conf.yaml: flows.scheme_master.target.table: table 'public.programmes' is not declared under " \
           "connections.citizen.tables" in problems
    assert "conf.yaml: flows.profile_prefill.columns.nickname: column 'nickname' is not declared in target " \
           "table public.citizens" in problems
    assert "conf.yaml: flows.profile_prefill.columns.phone.from: column 'mobile' is not declared in source " \
           "table public.citizen_profiles" in problems
    assert "conf.yaml: flows.profile_prefill.filters.0.column: column 'caste' is not declared in source " \
           "table public.citizen_profiles" in problems


def test_semantic_rules() -> None:
    raw = reference_raw()
    raw["flows"]["feedback"]["columns"]["citizen_ref"]["mask"]["secret"] = "other_key"
    raw["flows"]["scheme_master"]["schedule"] = "every day"
    del raw["flows"]["profile_prefill"]["columns"]["citizen_id"]
    raw["flows"]["profile_prefill"]["columns"]["gender"] = {"from": "gender", "const": "X"}
    problems = problems_of(raw)
    assert any(p.startswith("conf.yaml: flows.profile_prefill.columns.gender: ")
               and "exactly one of" in p for p in problems), problems
    # The model error stops cross-checks of the same load; fix it and the rest is reported.
    raw["flows"]["profile_prefill"]["columns"]["gender"] = "gender"
    problems = problems_of(raw)
    assert "conf.yaml: flows.feedback.columns.citizen_ref.mask: secret 'other_key' is not declared under " \
           "secrets" in problems
    assert any(p.startswith("conf.yaml: flows.scheme_master.schedule: not a valid cron expression")
               for p in problems)
    assert "conf.yaml: flows.profile_prefill.columns: target key column 'citizen_id' is not mapped" in problems


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nflows: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ=ENV)
    [problem] = info.value.problems
    assert problem.file == str(bad) and problem.path.startswith("line ") and "not valid YAML" in problem.message
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", environ=ENV)
    assert problems_of(["a", "list"]) == ["conf.yaml: (top level): the file must hold a mapping of keys"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env}, check=False)


def test_cli_validate_reference_ok() -> None:
    proc = run_cli("validate", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "F1" in proc.stdout


def test_cli_validate_lists_all_three_mistakes_without_traceback(tmp_path: Path) -> None:
    raw = reference_raw()
    raw["flows"]["scheme_master"]["shedule"] = raw["flows"]["scheme_master"].pop("schedule")
    raw["flows"]["profile_prefill"]["columns"]["national_id_masked"]["mask"]["kind"] = "keep_first"
    path = tmp_path / "civicsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in ENV.items() if k != "CIVICSYNC_PSEUDONYM_KEY"}
    proc = run_cli("validate", str(path), env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [" ".join(line.split()) for line in proc.stderr.splitlines()]
    text = "\n".join(lines)
    assert f"{path}: flows.scheme_master.shedule: unknown key (misspelt?)" in text
    assert f"{path}: flows.profile_prefill.columns.national_id_masked.mask: " in text and "keep_first" in text
    assert f"{path}: secrets.pseudonym_key.env: environment variable CIVICSYNC_PSEUDONYM_KEY is not set" in text


def test_reference_config_path_is_packaged() -> None:
    assert reference_config_path().is_file()


def test_validate_without_secrets_needs_no_environment_but_checks_everything_else(tmp_path: Path) -> None:
    """Issue 11 item 13: a department's CI validates its config without DSNs or secrets."""
    ok = run_cli("validate", "--no-secrets", env={})
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "environment not checked" in ok.stdout
    raw = reference_raw()
    raw["flows"]["scheme_master"]["target"]["table"] = "public.nowhere"
    raw["service"] = {"api": {"connection": "portal"}}
    path = tmp_path / "civicsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    bad = run_cli("validate", "--no-secrets", str(path), env={})
    text = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "flows.scheme_master.target.table" in text and "service.api.connection" in text
    assert "environment variable" not in text  # the environment is not asked for
    as_json = run_cli("validate", "--no-secrets", "--json", str(path), env={})
    assert as_json.returncode == 2
    assert {p["path"] for p in json.loads(as_json.stdout)["problems"]} == {
        "flows.scheme_master.target.table", "service.api.connection"}


def test_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    """Issue 11 item 5: not a UnicodeDecodeError traceback."""
    path = tmp_path / "civicsync.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(path, environ=ENV)


@pytest.mark.parametrize("dsn", ["host=== secret-pw", "nonsense", "postgresql://u:pw@h:notaport/x", "foo=bar"])
def test_malformed_dsn_is_a_config_error_that_never_echoes_it(dsn: str) -> None:
    problems = problems_of(reference_raw(), {**ENV, "CIVICSYNC_WAREHOUSE_DSN": dsn})
    assert len(problems) == 1 and "connections.warehouse.dsn_env" in problems[0]
    assert "not a valid PostgreSQL DSN" in problems[0]
    assert "secret-pw" not in problems[0] and ":pw@" not in problems[0]


def test_api_connection_must_be_declared() -> None:
    """Issue 11 item 2: otherwise `apikey create` crashed with KeyError and calls answered 500."""
    raw = reference_raw()
    raw["service"] = {"api": {"connection": "citizens"}}
    assert problems_of(raw) == ["conf.yaml: service.api.connection: connection 'citizens' is not declared "
                                "(declared: warehouse, citizen)"]


def test_a_config_without_an_api_says_so_and_needs_none_of_its_tables() -> None:
    """A department that runs no HTTP API (one connection, no callback tables) validates once it says
    so, and `apikey create` then refuses with a clear message (exit 2) instead of a KeyError."""
    raw = reference_raw()
    del raw["connections"]["citizen"]
    raw["flows"] = {}
    raw["service"] = {"api": {"enabled": False}}
    parse_config(raw, "conf.yaml", ENV)
    raw["service"] = {}
    assert problems_of(raw) == ["conf.yaml: service.api.connection: connection 'citizen' is not declared "
                                "(declared: warehouse)"]
