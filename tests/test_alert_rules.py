"""Alert rules, their promtool unit tests, runbooks and the Alertmanager config, checked with the real
tools (promtool, amtool, prometheus-alertmanager), and against the metrics civicsync exports."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from civicsync.cli import app
from civicsync.localpg import free_port
from fix_monitoring import (
    ALERTMANAGER_CONFIG,
    PROM_CONFIG,
    PROM_TESTS,
    REPO,
    RULES,
    RUNBOOKS,
    alert_rules,
    exported_metrics,
    http_get,
    load_rules,
    promql_problems,
    read_promql,
    require_binary,
    running,
)

ALERTS = [r["alert"] for r in alert_rules()]
SEVERITIES = {"critical", "warning"}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)


def _unit_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test of every promtool test file."""
    cases: list[dict[str, Any]] = []
    for path in sorted(PROM_TESTS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        assert any((path.parent / f).resolve() == RULES for f in doc["rule_files"]), f"{path} does not load {RULES}"
        for test in doc["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


# --------------------------------------------------------------------------- promtool

def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    res = _run([promtool, "check", "rules", str(RULES)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in res.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = sorted(str(p) for p in PROM_TESTS.glob("*.yml"))
    assert files, f"no promtool tests in {PROM_TESTS}"
    res = _run([promtool, "test", "rules", *files])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAILED" not in res.stdout


def test_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    promtool = require_binary("promtool")
    res = _run([promtool, "check", "config", str(PROM_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    doc = yaml.safe_load(PROM_CONFIG.read_text())
    assert [(PROM_CONFIG.parent / f).resolve() for f in doc["rule_files"]] == [RULES]
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == "civicsync")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8787"]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def _unit_tests_against(tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    """promtool test rules with the shipped tests, against a copy of the rules where ``old`` is ``new``."""
    promtool = require_binary("promtool")
    text = RULES.read_text()
    assert old in text
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(text.replace(old, new))
    for path in PROM_TESTS.glob("*.yml"):
        (tmp_path / "tests" / path.name).write_text(path.read_text())
    return _run([promtool, "test", "rules", *map(str, (tmp_path / "tests").glob("*.yml"))])


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosen one threshold and promtool test rules fails."""
    res = _unit_tests_against(tmp_path, "civicsync_replication_lag_seconds > 60",
                              "civicsync_replication_lag_seconds > 600")
    assert res.returncode != 0
    assert "CivicsyncReplicationLagHigh" in res.stdout + res.stderr


def test_the_old_pending_delta_rule_misses_an_arrival_a_replay_hides(tmp_path: Path) -> None:
    """The rule on the pending gauge's delta (before civicsync_dead_letters_created_total) fails the tests:
    one new dead letter a minute while one a minute is replayed leaves the pending count flat."""
    rule = RULES.read_text()
    start = rule.index("increase(civicsync_dead_letters_created_total[15m])")
    expr = rule[start:rule.index("civicsync_dead_letters > 0", start) + len("civicsync_dead_letters > 0")]
    res = _unit_tests_against(tmp_path, expr, "delta(civicsync_dead_letters[15m]) > 0 and civicsync_dead_letters > 0")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "CivicsyncDeadLettersGrowing" in out
    # what it got at 20m: the steady and the stopping flow, not the one whose arrivals a replay hid
    got = out[out.index("time: 20m"):]
    got = got[got.index("got:"):got.index("time:", 1) if "time:" in got[1:] else len(got)]
    assert 'flow="application_submissions"' in got and 'flow="decision_updates"' not in got


# --------------------------------------------------------------------------- every alert: test, labels, runbook

def test_alert_names_are_unique() -> None:
    assert len(ALERTS) == len(set(ALERTS)), ALERTS
    assert len(ALERTS) >= 12


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alert: str) -> None:
    cases = [c for c in _unit_tests() if c["alertname"] == alert]
    firing = [c for c in cases if c.get("exp_alerts")]
    quiet = [c for c in cases if not c.get("exp_alerts")]
    assert firing, f"{alert}: no promtool case where it fires"
    assert quiet, f"{alert}: no promtool case where it must stay quiet"
    rule = next(r for r in alert_rules() if r["alert"] == alert)
    for case in firing:
        for exp in case["exp_alerts"]:
            # exact expectations: every label the rule sets and every annotation, rendered
            assert rule["labels"].items() <= exp["exp_labels"].items(), (alert, exp["exp_labels"])
            assert set(exp["exp_annotations"]) == set(rule["annotations"]), (alert, exp["exp_annotations"])


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_severity_annotations_and_runbook(alert: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alert)
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["service"] == "civicsync"
    notes = rule["annotations"]
    for key in ("summary", "description"):
        assert "{{ $labels." in notes[key], f"{alert}: {key} names none of the alert's labels"
    assert notes["runbook_url"] == f"docs/runbooks/{alert}.md"
    assert "://" not in notes["runbook_url"]
    runbook = REPO / notes["runbook_url"]
    assert runbook.is_file(), f"{alert}: {runbook} is missing"
    text = runbook.read_text()
    assert text.startswith(f"# {alert}\n")
    for section in ("## What it means", "## How to check", "## How to fix", "## When to escalate"):
        assert section in text, f"{runbook.name}: no {section!r}"
    assert f"({alert}.md)" in (RUNBOOKS / "README.md").read_text(), f"{alert}: not linked from the runbook index"


def test_no_orphan_runbooks_and_links_between_runbooks_resolve() -> None:
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(ALERTS)
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.(?:md|yml|json))(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().exists(), f"{page.name}: broken link {target}"


def _code(markdown: str) -> str:
    """The code in a markdown page: fenced blocks and inline spans (prose may say "civicsync engineers")."""
    return "\n".join(re.findall(r"```.*?```|`[^`\n]+`", markdown, flags=re.S))


# A command line in a code block or span, up to the end of the command: a pipe, `;`, `&&`, a comment,
# a closing backtick or the end of the line. In the index's table `\|` separates alternatives.
_COMMAND_LINE = re.compile(r"\bcivicsync((?: +[^\s|;&#`'\"]+)*)")


def _commands_in(markdown: str) -> list[list[str]]:
    """The words after `civicsync` of every command line in the page's code."""
    found: list[list[str]] = []
    for line in _code(markdown).replace("\\|", " ").splitlines():
        for match in _COMMAND_LINE.finditer(line):
            words = [w.strip("[]") for w in match.group(1).split()]
            if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
                found.append(words)
    return found


def _command_problems(pages: dict[str, str]) -> tuple[set[tuple[str, ...]], list[str]]:
    """(commands used, problems) of the civicsync command lines in ``pages`` (name -> markdown): each must
    name a command of the CLI (down to a leaf) and only options that command has."""
    root = typer.main.get_command(app)
    used: set[tuple[str, ...]] = set()
    problems: list[str] = []
    for page, text in pages.items():
        for words in _commands_in(text):
            command: Any = root
            path: list[str] = []
            for word in words:
                subcommands = getattr(command, "commands", None)
                if subcommands is None or word.startswith("-"):
                    break
                if word not in subcommands:
                    problems.append(f"{page}: `civicsync {' '.join([*path, word])}` is no command")
                    command = None
                    break
                command = subcommands[word]
                path.append(word)
            if command is None:
                continue
            if getattr(command, "commands", None) is not None:
                problems.append(f"{page}: `civicsync {' '.join(path)}` needs a subcommand")
                continue
            used.add(tuple(path))
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
            for word in words[len(path):]:
                option = word.split("=", 1)[0]
                if option.startswith("-") and option not in options | {"--help"}:
                    problems.append(f"{page}: `civicsync {' '.join(path)}` has no option {option}")
    return used, problems


def test_runbook_commands_exist_in_the_cli() -> None:
    """Every `civicsync ...` in a runbook's code is a command of the CLI, with options it has."""
    used, problems = _command_problems({p.name: p.read_text() for p in sorted(RUNBOOKS.glob("*.md"))})
    assert not problems, "\n".join(problems)
    # the commands the runbooks are built on: each is used, so the check above covers it
    assert {("status",), ("runs",), ("dlq", "list"), ("dlq", "replay"), ("dlq", "discard"), ("batch", "run"),
            ("reconcile",), ("run",), ("validate",)} <= used, sorted(used)


def test_the_runbook_command_check_catches_wrong_commands_and_options() -> None:
    page = """
```sh
civicsync reconcile FLOW --repair --json | jq .   # fine
civicsync run --config FILE --host H --port P --no-api
civicsync reconcile FLOW --fix
civicsync dlq purge --flow FLOW
civicsync dlq
```
Prose names civicsync engineers; `civicsync.dead_letters` and `civicsync_flow_up` are no commands, and
the index writes alternatives as `civicsync dlq replay DATABASE:ID\\|--flow F\\|--everything`.
"""
    used, problems = _command_problems({"page.md": page})
    assert used == {("reconcile",), ("run",), ("dlq", "replay")}
    assert problems == ["page.md: `civicsync reconcile` has no option --fix",
                        "page.md: `civicsync dlq purge` is no command",
                        "page.md: `civicsync dlq` needs a subcommand",
                        "page.md: `civicsync dlq replay` has no option --everything"]


# --------------------------------------------------------------------------- metric names

def test_rules_use_only_metrics_civicsync_exports() -> None:
    known = exported_metrics()
    problems: list[str] = []
    used: set[str] = set()
    for rule in load_rules():
        name = rule.get("alert") or rule["record"]
        problems += promql_problems(rule["expr"], name, known)
        used |= read_promql(rule["expr"]).metrics
    assert not problems, "\n".join(problems)
    assert {"up", "civicsync_flow_up", "civicsync_cdc_apply_latency_seconds_bucket"} <= used


def test_the_promql_reader_catches_wrong_names_and_labels() -> None:
    known = exported_metrics()
    assert promql_problems('sum by (flow) (rate(civicsync_batch_runs_total{status="failed"}[5m]))', "ok", known) == []
    assert promql_problems('sum(rate(civicsync_flow_up_total[5m]))', "x", known)
    assert promql_problems('civicsync_slot_wal_retained_bytes{flow="F3"}', "x", known)
    assert promql_problems('sum by (flow) (civicsync_slot_wal_retained_bytes)', "x", known)
    assert not promql_problems('histogram_quantile(0.99, sum by (le) (rate('
                               'civicsync_cdc_apply_latency_seconds_bucket{worker=~"$worker"}[$__rate_interval])))',
                               "ok", known)


# --------------------------------------------------------------------------- Alertmanager

def test_alertmanager_config_checks_with_amtool() -> None:
    amtool = require_binary("amtool")
    res = _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    (["service=civicsync", "severity=critical", "alertname=CivicsyncDown"], "civicsync-page"),
    (["service=civicsync", "severity=warning", "alertname=CivicsyncDeadLettersOld"],
     "civicsync-chat,civicsync-tickets"),
    (["alertname=SomethingElse"], "civicsync-email"),
])
def test_alertmanager_routes_by_severity(labels: list[str], receivers: str) -> None:
    amtool = require_binary("amtool")
    res = _run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                f"--verify.receivers={receivers}", *labels])
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_severity_reaches_a_receiver_with_email_chat_and_webhook() -> None:
    doc = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    kinds = {r["name"]: {k for k in r if k.endswith("_configs")} for r in doc["receivers"]}
    assert {"email_configs", "slack_configs", "webhook_configs"} <= set().union(*kinds.values())
    assert "smtp_auth_password_file" in doc["global"]
    assert all("api_url_file" in c and "api_url" not in c
               for r in doc["receivers"] for c in r.get("slack_configs", []))
    severities = {rule["labels"]["severity"] for rule in alert_rules()}
    routed = {m for route in doc["route"]["routes"] for m in route["matchers"] if m.startswith("severity=")}
    assert {f'severity="{s}"' for s in severities} <= routed
    inhibits = doc["inhibit_rules"]
    assert any(r["source_matchers"] == ['alertname="CivicsyncDown"'] for r in inhibits)
    names = set(ALERTS)
    for rule in inhibits:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            for name in re.findall(r"Civicsync\w+", matcher):
                assert name in names, f"inhibit rule names unknown alert {name}"


def test_alertmanager_starts_with_the_config() -> None:
    """The real binary loads the file (including the secret-file settings) and becomes ready."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="civicsync-am-") as tmp:
        args = [binary, f"--config.file={ALERTMANAGER_CONFIG}", "--cluster.listen-address=",
                f"--web.listen-address=127.0.0.1:{port}", f"--storage.path={tmp}"]
        with running(args, Path(tmp) / "alertmanager.log", f"http://127.0.0.1:{port}/-/ready", timeout=20):
            status, body = http_get(f"http://127.0.0.1:{port}/api/v2/status")
            assert status == 200
            loaded = yaml.safe_load(json.loads(body)["config"]["original"])
            assert {r["name"] for r in loaded["receivers"]} == {
                r["name"] for r in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]}
