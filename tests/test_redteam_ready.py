"""Red team (issue 9 item 18, issue 11 item 2, README "/ready"): `/ready` is honest about a flow that a
schema change stopped while the rest of its worker goes on: "every event-path flow running" is then
false, so `/ready` must answer 503 naming the flow (and `civicsync status` must not call it streaming)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from civicsync.localpg import free_port
from fix_cdc import (
    add_documents,
    cdc_config,
    cdc_raw,
    civicsync,
    cleanup,
    make_applications,
    role_environ,
    wait_for,
    write_config,
)
from fix_db import Deployment, q


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


def test_ready_is_503_while_a_schema_change_stops_a_flow(fresh_deployment: Deployment, tmp_path: Path) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    raw = cdc_raw()
    raw.setdefault("service", {})["scheduler"] = {"enabled": False}
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    port = free_port()
    f6, f7 = (next(n for n, f in config.model.flows.items() if f.id == i) for i in ("F6", "F7"))
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path)}
    proc = subprocess.Popen([sys.executable, "-m", "civicsync.cli", "run", "--flow", "F6", "--flow", "F7",
                             "--no-scheduler", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/ready"
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url)[0] == 200, timeout=60, what="the service to be ready")
        q(dep, "citizen", "ALTER TABLE application_documents RENAME COLUMN mime_type TO media_type")
        add_documents(dep, range(1, 2))
        wait_for(lambda: q(dep, "warehouse", "SELECT flow FROM civicsync.cdc_flow_stops"), timeout=30,
                 what="F7 to stop")
        q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED', updated_at = clock_timestamp()")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("SUBMITTED",)],
                 what="F6 to go on")
        _code, body = wait_for(lambda: (r := _get(url))[0] == 503 and r, timeout=10, what="/ready to say 503")
        stops = [r for r in body["reasons"] if "schema change" in r]
        assert len(stops) == 1 and "mime_type" in stops[0], body  # names the flow and the column
        assert f7 in stops[0], body
        assert not any(f6 in r for r in body["reasons"]), body  # the other flow goes on
        # The status API (and the page built on it) says the flow is stopped, why, and what to change.
        _code, report = _get(f"{base}/api/v1/status")
        flows = {f["id"]: f for f in report["flows"]}
        assert flows["F7"]["state"] == "stopped" and flows["F7"]["health"] == "error", flows["F7"]
        assert any("mime_type" in p and "map the new name" in p for p in flows["F7"]["problems"]), flows["F7"]
        assert flows["F6"]["state"] == "streaming" and flows["F6"]["health"] != "error", flows["F6"]
        # `civicsync status` reads the stop from the target, without the service.
        shown = {r["id"]: r for r in json.loads(civicsync(dep, config_path, "status", "--json").stdout)}
        assert shown["F7"]["state"] == "stopped" and "mime_type" in shown["F7"]["stop_reason"], shown["F7"]
        assert shown["F6"]["state"] == "streaming", shown["F6"]
        # The metric the alert CivicsyncFlowStopped fires on.
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            exposition = resp.read().decode()
        assert f'civicsync_flow_stopped{{flow="{f7}"}} 1.0' in exposition, exposition
        assert f'civicsync_flow_stopped{{flow="{f6}"}} 0.0' in exposition
        assert f'civicsync_flow_up{{flow="{f7}",kind="cdc"}} 0.0' in exposition
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            cleanup(config, "citizen")
