"""The operator status page in a real headless Chromium: flows, their state, and a flow in error shown as one."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser

import pytest

from civicsync.jobs.batch import run_batch
from civicsync.runtime.state import ServiceState, WorkerState
from fix_api import make_keys, serve
from fix_db import Deployment
from fix_monitoring import CHROMIUM, dump_dom
from helpers import config_variant

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed")


class Rows(HTMLParser):
    """The flow rows of the page's table: data-flow → (class, [cell texts])."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, tuple[str, list[str]]] = {}
        self.banner = ""
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._in_banner = False
        self.login_visible = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-flow"):
            self._row = str(a["data-flow"])
            self.rows[self._row] = (str(a.get("class")), [])
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif a.get("id") == "banner":
            self._in_banner = True
        elif a.get("id") == "login":
            self.login_visible = "display: block" in (a.get("style") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self.rows[self._row][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "div":
            self._in_banner = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_banner:
            self.banner += data


def rendered(url: str) -> Rows:
    """The flow rows, banner and login form of the rendered page."""
    rows = Rows()
    rows.feed(dump_dom(url))
    return rows


def test_page_shows_every_flow_and_the_ones_in_error(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = dep.config()
    failed = run_batch(config, "F1")  # no schemes in the warehouse: F1's validation refuses the run
    assert not failed.ok
    assert run_batch(config, "F12").ok
    streaming = [n for n, f in config.model.flows.items() if f.streams]
    state = ServiceState()
    state.workers = {"warehouse": WorkerState("warehouse", streaming[:-1], phase="running"),
                     "citizen": WorkerState("citizen", streaming[-1:], phase="failed", last_error="slot gone")}
    server = serve(config, state)
    try:
        page = rendered(server.url + "/")
    finally:
        server.stop()
    assert set(page.rows) == {f.id for f in config.model.flows.values()}
    f1_class, f1_cells = page.rows["F1"]
    assert f1_class == "error" and f1_cells[3] == "failed" and f1_cells[4] == "error"
    assert "last run failed" in f1_cells[-1] and "validation failed" in f1_cells[-1]
    f12_class, f12_cells = page.rows["F12"]
    assert f12_class == "ok" and f12_cells[3] == "succeeded"
    stopped_id = config.model.flows[streaming[-1]].id
    stopped_class, stopped_cells = page.rows[stopped_id]
    assert stopped_class == "error" and "CDC worker failed: slot gone" in stopped_cells[-1]
    running_id = config.model.flows[streaming[0]].id
    assert page.rows[running_id][0] != "error"
    assert page.banner == ""


def test_page_without_a_key_when_status_is_not_public(fresh_deployment: Deployment) -> None:
    config = config_variant(fresh_deployment.environ, lambda raw: raw.setdefault("service", {}).setdefault(
        "api", {}).update(status_public=False))
    make_keys(config)
    server = serve(config)
    try:
        page = rendered(server.url + "/")
    finally:
        server.stop()
    assert page.rows == {} and page.login_visible and "admin:read" in page.banner


def test_page_shows_a_database_that_is_down(fresh_deployment: Deployment) -> None:
    config = config_variant({**fresh_deployment.environ,
                             "CIVICSYNC_CITIZEN_DSN": "host=127.0.0.1 port=1 dbname=nowhere user=nobody"},
                            lambda raw: None)
    server = serve(config)
    try:
        page = rendered(server.url + "/")
    finally:
        server.stop()
    assert "status unavailable (HTTP 503)" in page.banner and "citizen" in page.banner
