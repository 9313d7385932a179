"""Issue 11 item 12: /docs (Swagger UI) and /redoc render in a real headless Chromium that cannot
resolve any host but the loopback one: their scripts and styles come from the API itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import httpx
import pytest

from fix_api import RunningApi

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed")


def offline_dom(url: str) -> str:
    """The page's DOM after its scripts ran, with every host name but 127.0.0.1 unresolvable."""
    with tempfile.TemporaryDirectory(prefix="civicsync-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
             "--virtual-time-budget=8000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_swagger_ui_renders_every_operation_offline(api: RunningApi) -> None:
    page = httpx.get(api.url + "/docs").text
    assert "cdn" not in page.lower() and "/docs-assets/swagger-ui-bundle.js" in page
    dom = offline_dom(api.url + "/docs")
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/api/v1/forecasts", "/api/v1/alerts", "/api/v1/status", "/health"} <= paths, dom[-2000:]


def test_redoc_renders_offline(api: RunningApi) -> None:
    page = httpx.get(api.url + "/redoc").text
    assert "cdn" not in page.lower()
    dom = offline_dom(api.url + "/redoc")
    assert "F9: store processing-time forecasts" in dom and "/api/v1/alerts" in dom
