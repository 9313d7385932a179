"""Issue 13 item 1: the kafka: section is validated; mistakes are listed together, clearly (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from civicsync.cli import app
from civicsync.errors import ConfigError
from civicsync.kafka.capture import kafka_settings
from helpers import config_variant, reference_raw

ENV = {"CIVICSYNC_WAREHOUSE_DSN": "postgresql://x@127.0.0.1:1/w", "CIVICSYNC_CITIZEN_DSN": "postgresql://x@127.0.0.1:1/c",
       "CIVICSYNC_PSEUDONYM_KEY": "k" * 32}


def with_kafka(section: dict[str, Any]) -> Any:
    return config_variant(ENV, lambda raw: raw.update(kafka=section))


def test_defaults_are_masked_one_topic_per_flow() -> None:
    settings = kafka_settings(with_kafka({"bootstrap_env": "KB"}))
    assert settings.publish == "masked"
    assert settings.topic_name("application_submissions", "F6") == "civicsync.application_submissions"
    assert settings.settings("application_submissions", "F6").partitions == 6


def test_per_flow_settings_override_the_defaults_by_name_or_id() -> None:
    settings = kafka_settings(with_kafka({"bootstrap_env": "KB", "topics": {
        "defaults": {"partitions": 3, "replication_factor": 3, "min_insync_replicas": 2, "retention_ms": 1000},
        "flows": {"F6": {"partitions": 12, "name": "apps"}}}}))
    own = settings.settings("application_submissions", "F6")
    assert (own.partitions, own.replication_factor, own.min_insync_replicas, own.retention_ms) == (12, 3, 2, 1000)
    assert settings.topic_name("application_submissions", "F6") == "apps"


@pytest.mark.parametrize(("section", "expected"), [
    ({"bootstrap_env": "lower"}, "bootstrap_env"),
    ({"bootstrap_env": "KB", "publish": "plain"}, "publish"),
    ({"bootstrap_env": "KB", "topics": {"defaults": {"partitions": 0}}}, "partitions"),
    ({"bootstrap_env": "KB", "topics": {"defaults": {"replication_factor": 1, "min_insync_replicas": 2}}},
     "min_insync_replicas"),
    ({"bootstrap_env": "KB", "consumer": {"group_protocol": "eager"}}, "group_protocol"),
])
def test_bad_values_are_refused_at_load(section: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        with_kafka(section)
    assert expected in str(err.value)


def test_references_to_flows_and_connections_are_checked_all_at_once() -> None:
    config = with_kafka({"bootstrap_env": "KB", "topics": {"flows": {
        "F99": {}, "F3": {}, "F6": {"partition_by": ["citizen_ref"]},
        "F7": {"replication_factor": 1, "min_insync_replicas": 3}}}, "debezium": {"nowhere": {"topic_prefix": "x"}}})
    with pytest.raises(ConfigError) as err:
        kafka_settings(config)
    text = str(err.value)
    for part in ("no flow called 'F99'", "eligibility_hints is not carried on Kafka",
                 "citizen_ref not in the target key", "min_insync_replicas (3) cannot exceed",
                 "no connection called 'nowhere'"):
        assert part in text, text
    assert len(err.value.problems) == 5


def test_cli_says_what_is_wrong_with_exit_2_and_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = reference_raw()
    raw["kafka"] = {"bootstrap_env": "KB", "topics": {"flows": {"F99": {}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["kafka", "topics", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "no flow called 'F99'" in result.output and "Traceback" not in result.output
    monkeypatch.delenv("KB", raising=False)
    raw["kafka"] = {"bootstrap_env": "KB"}
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["kafka", "topics", "-c", str(path)])
    assert result.exit_code == 1 and "KB is not set" in result.output


@pytest.mark.parametrize("start", ["yesterday", "2026-12-02T10:00:00"])
def test_a_bad_from_is_refused_with_exit_2(start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = reference_raw()
    raw["kafka"] = {"bootstrap_env": "KB"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    for key, value in {**ENV, "KB": "127.0.0.1:1"}.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["apply", "--group", "g", "--from", start, "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "--from" in result.output and "Traceback" not in result.output
