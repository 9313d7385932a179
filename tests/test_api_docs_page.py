"""Issue 11 item 12: /docs (Swagger UI) and /redoc render in a real headless Chromium that cannot
resolve any host but the loopback one: their scripts and styles come from the API itself."""

from __future__ import annotations

import re
import shutil

import httpx
import pytest

from fix_api import RunningApi
from fix_monitoring import CHROMIUM, dump_dom

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed")


def test_swagger_ui_renders_every_operation_offline(api: RunningApi) -> None:
    page = httpx.get(api.url + "/docs").text
    assert "cdn" not in page.lower() and "/docs-assets/swagger-ui-bundle.js" in page
    dom = dump_dom(api.url + "/docs", offline=True, budget_ms=8000)
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/api/v1/forecasts", "/api/v1/alerts", "/api/v1/status", "/health"} <= paths, dom[-2000:]


def test_redoc_renders_offline(api: RunningApi) -> None:
    page = httpx.get(api.url + "/redoc").text
    assert "cdn" not in page.lower()
    dom = dump_dom(api.url + "/redoc", offline=True, budget_ms=8000)
    assert "F9: store processing-time forecasts" in dom and "/api/v1/alerts" in dom
