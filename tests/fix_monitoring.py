"""Shared by the monitoring tests: where the artefacts live, the metrics civicsync exports, a small
PromQL reader (metric names, selectors' labels, grouping labels) and real-binary process helpers
(servers, and headless Chromium for the status page)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import ProcessCollector

from civicsync import metrics

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "rules" / "civicsync.rules.yml"
PROM_TESTS = REPO / "deploy" / "prometheus" / "tests"
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = ("sync-overview", "data-quality", "consumer-lag")

TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus attaches to every scraped series."""

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def require_binary(name: str) -> str:
    """The path of a real tool, or skip: setup installs it from Debian packages."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it: Debian package of Prometheus / "
                    "Alertmanager)")
    return path


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the rules file (alerts and recording rules), flattened."""
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


# --------------------------------------------------------------------------- what civicsync exports

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exported_metrics() -> dict[str, frozenset[str] | None]:
    """Series name → its label names (without job/instance; ``None``: any, e.g. an Info's keys), for
    everything in :data:`civicsync.metrics.REGISTRY`, plus ``up`` (Prometheus' own, per target) and
    the process metrics of prometheus_client's ProcessCollector, which the service's API adds."""
    names: dict[str, frozenset[str] | None] = {"up": frozenset()}
    collectors = list(metrics.REGISTRY._collector_to_names)
    for collector in collectors:
        labelnames: tuple[str, ...] | None = getattr(collector, "_labelnames", None)
        describe = getattr(collector, "describe", None)
        for family in (describe() if describe else []) or collector.collect():
            for suffix in _SUFFIXES[family.type]:
                labels: frozenset[str] | None
                if family.type == "info" or labelnames is None:
                    labels = None
                else:
                    labels = frozenset(labelnames) | ({"le"} if suffix == "_bucket" else set())
                names[family.name + suffix] = labels
    for family in ProcessCollector(registry=None).collect():
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = frozenset()
    return names


# --------------------------------------------------------------------------- reading PromQL

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


@dataclass
class PromQL:
    """What an expression refers to: metric names, each selector's matched labels, grouping labels."""

    expr: str
    metrics: set[str] = field(default_factory=set)
    selectors: list[tuple[str, set[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def read_promql(expr: str) -> PromQL:
    """Parse enough of ``expr`` to check it against the exported metrics (not a full PromQL parser:
    label values and Grafana variables are blanked out first, so they are never taken for names)."""
    out = PromQL(expr)
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    text = _RANGE.sub("", text)
    for name, matchers in _SELECTOR.findall(text):
        labels = set(_MATCHER.findall(matchers))
        if name:
            out.metrics.add(name)
        out.selectors.append((name, labels))
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    for _, labels in _GROUPING.findall(text):
        out.grouping |= {label.strip() for label in labels.split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    for name in _IDENT.findall(text):
        if name.lower() not in _KEYWORDS:
            out.metrics.add(name)
    return out


def promql_problems(expr: str, where: str, known: dict[str, frozenset[str] | None]) -> list[str]:
    """Every metric or label ``expr`` uses that civicsync does not export, as readable messages."""
    q = read_promql(expr)
    problems = [f"{where}: metric {name!r} is not exported by civicsync (civicsync.metrics.REGISTRY)"
                for name in sorted(q.metrics) if name not in known]
    available: set[str] = set(TARGET_LABELS)
    for name in q.metrics:
        labels = known.get(name)
        if labels is not None:
            available |= labels
    for name, labels in q.selectors:
        allowed = known.get(name)
        if allowed is None:
            continue
        for label in sorted(labels - allowed - TARGET_LABELS - {"__name__"}):
            problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(allowed)})")
    if not any(known.get(n, frozenset()) is None for n in q.metrics):
        for label in sorted(q.grouping - available):
            problems.append(f"{where}: grouping label {label!r} is on none of {sorted(q.metrics)}")
    return problems


# --------------------------------------------------------------------------- dashboards

@dataclass
class PanelQuery:
    dashboard: str
    panel_id: int
    title: str
    ref: str
    expr: str
    legend: str

    @property
    def where(self) -> str:
        return f"{self.dashboard}.json panel {self.panel_id} {self.title!r} query {self.ref}"


def load_dashboard(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GRAFANA / f"{name}.json").read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are containers; collapsed rows carry their panels inside)."""
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        if panel["type"] == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


def panel_queries() -> list[PanelQuery]:
    return [PanelQuery(name, p["id"], p["title"], t["refId"], t.get("expr", ""), t.get("legendFormat", ""))
            for name in DASHBOARDS for p in panels(load_dashboard(name)) for t in p.get("targets", [])]


def concrete(expr: str, job: str = "civicsync", rate_interval: str = "1m") -> str:
    """A panel's PromQL as Grafana sends it with every filter on "All" (``$__rate_interval`` is at least
    four scrape intervals; pass what suits the Prometheus it runs against)."""
    for var, value in (("$__rate_interval", rate_interval), ("$job", job), ("$instance", ".*"), ("$flow", ".*")):
        expr = expr.replace("${" + var[1:] + "}", value).replace(var, value)
    assert "$" not in expr, f"unknown variable left in {expr}"
    return expr


# --------------------------------------------------------------------------- real processes

def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
                 log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log) if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n"
                                 f"{log.read_text() if log else ''}")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s:\n{log.read_text() if log else ''}")


@contextmanager
def running(args: list[str], log: Path, ready_url: str, timeout: float = 30.0,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a real server process until the block ends (terminated by its own pid, then killed)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http_ok(ready_url, timeout, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def dump_dom(url: str, *, offline: bool = False, budget_ms: int = 4000) -> str:
    """The page's DOM after its script ran, as headless Chromium sees it, as HTML. ``offline``: every
    host name but 127.0.0.1 is unresolvable (a page must not need the internet)."""
    offline_rules = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"] if offline else []
    with tempfile.TemporaryDirectory(prefix="civicsync-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             *offline_rules, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
