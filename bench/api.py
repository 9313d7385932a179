"""Benchmark: the HTTP API at 50 concurrent clients: ML callbacks per second and the status API's
p99, beside ``/health`` (no database: the floor of the server itself), all in the same run.

    .venv/bin/python bench/api.py [--clients 50] [--seconds 10] [--json]

What it does
    Starts its own PostgreSQL (civicsync.localpg, a temp dir, a free port; fsync off), creates the
    reference databases, puts 100 schemes and 1,000 citizens in the portal and makes one API key.
    Then it serves the API the way production does, as ``civicsync run --no-workers --no-scheduler``
    in a child process (real uvicorn; the config's pool and status cache) and keeps ``--clients``
    requests in flight with wrk (Debian's ``wrk``, 2 threads, a Lua script making each request body
    unique) for ``--seconds`` per phase:

    health          GET /health (no database, no key)
    alerts          POST /api/v1/alerts, one new alert each (a citizen's, so its id is checked)
    forecasts       POST /api/v1/forecasts, one new (scheme, district, day) each
    status          GET /api/v1/status (cached for service.api.status_cache_seconds, 2 s)
    status-uncached the same with status_cache_seconds: 0 (a second child, same databases)

    Non-200 responses and socket errors are counted. Prints requests/s and p50 / p99 latency per
    phase. Client and server share the machine's cores: wrk's own cost is in every figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchrun import log, run_on_private_server
from civicsync.api.keys import create_key
from civicsync.config.loader import load_config, reference_config_path
from civicsync.localpg import LocalPostgres, free_port
from civicsync.provision.databases import init_databases


def _environ(server: LocalPostgres) -> dict[str, str]:
    return {"CIVICSYNC_WAREHOUSE_DSN": server.dsn("smart_warehouse"),
            "CIVICSYNC_CITIZEN_DSN": server.dsn("smart_citizen"),
            "CIVICSYNC_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789"}


def _prepare(server: LocalPostgres, env: dict[str, str]) -> tuple[str, list[str]]:
    config = load_config(environ=env)
    init_databases(config)
    citizens = [str(uuid.UUID(int=i + 1, version=4)) for i in range(1000)]
    import psycopg

    with psycopg.connect(env["CIVICSYNC_CITIZEN_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO schemes (scheme_id, code, name, category, status)"
                     " SELECT g, 'S' || g, 'Scheme ' || g, 'welfare', 'OPEN' FROM generate_series(1, 100) g")
        conn.execute("INSERT INTO citizens (citizen_id, full_name, district) SELECT unnest(%s::uuid[]), 'A', 'North'",
                     (citizens,))
    key, _ = create_key(config, "bench", ["forecasts:write", "alerts:write", "admin:read"])
    return key, citizens


def _serve(env: dict[str, str], config: Path, port: int) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-m", "civicsync.cli", "run", "--no-workers", "--no-scheduler",
                              "--port", str(port), "-c", str(config)], env={**os.environ, **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            time.sleep(0.1)
    child.kill()
    raise RuntimeError("the API did not start")


_LUA = """
local n = 0
local key = "__KEY__"
local citizens = {__CITIZENS__}
function setup(thread)
  thread:set("id", tostring(math.random(1, 2^30)))
end
function request()
  n = n + 1
  local kind = "__KIND__"
  local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
  if kind == "alerts" then
    local body = string.format('{"alert_id":"%s-%d","citizen_id":"%s","severity":"info","alert_type":"bench",'
      .. '"message":"A message for the portal."}', id, n, citizens[(n % #citizens) + 1])
    return wrk.format("POST", "/api/v1/alerts", headers, body)
  elseif kind == "forecasts" then
    local body = string.format('{"scheme_id":%d,"district":"D%s-%d","horizon_date":"2031-01-01",'
      .. '"model_version":"v1","demand_index":0.5}', (n % 100) + 1, id, math.floor(n / 100))
    return wrk.format("POST", "/api/v1/forecasts", headers, body)
  end
  return wrk.format("GET", "__PATH__", headers)
end
"""


def _phase(url: str, key: str, citizens: list[str], kind: str, clients: int, seconds: float,
           tmp: Path) -> dict[str, Any]:
    """One phase through wrk (a C load generator: the client costs little of the 2 cores)."""
    path = {"health": "/health", "status": "/api/v1/status"}.get(kind, "/")
    script = tmp / f"{kind}.lua"
    script.write_text(_LUA.replace("__KEY__", key).replace("__KIND__", kind).replace("__PATH__", path)
                      .replace("__CITIZENS__", ",".join(f'"{c}"' for c in citizens)))
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "30s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    return {"per_second": float(_field(out, r"Requests/sec:\s+([\d.]+)")),
            "p50_ms": _ms(_field(out, r"\n\s+50%\s+(\S+)")), "p99_ms": _ms(_field(out, r"\n\s+99%\s+(\S+)")),
            "requests": int(_field(out, r"(\d+) requests in")),
            "failures": int(_field(out, r"Non-2xx or 3xx responses: (\d+)", "0"))
            + sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))}


def _field(text: str, pattern: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match is None:
        if default is None:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{text}")
        return default
    return match.group(1)


def _ms(value: str) -> float:
    """wrk's latency ('812.00us', '3.41ms', '1.20s') in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise RuntimeError(f"cannot read wrk's latency {value!r}")
    return round(float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)], 2)


def measure(server: LocalPostgres, clients: int, seconds: float) -> dict[str, Any]:
    env = _environ(server)
    key, citizens = _prepare(server, env)
    phases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cache in (("cached", None), ("uncached", 0)):
            config = Path(tmp) / f"{label}.yaml"
            extra = "" if cache is None else f"\nservice:\n  api:\n    status_cache_seconds: {cache}\n"
            config.write_text(reference_config_path().read_text() + extra)
            port = free_port()
            child = _serve(env, config, port)
            try:
                names = ["health", "alerts", "forecasts", "status"] if label == "cached" else ["status"]
                for name in names:
                    shown = name if label == "cached" else "status-uncached"
                    log(f"{shown}: {clients} clients for {seconds:.0f} s")
                    phases[shown] = _phase(f"http://127.0.0.1:{port}", key, citizens, name, clients, seconds,
                                           Path(tmp))
                    log(f"  {phases[shown]}")
            finally:
                child.terminate()
                child.wait(30)
    return {"clients": clients, "seconds": seconds, "cpus": os.cpu_count(), "phases": phases}


def render(report: dict[str, Any]) -> None:
    print(f"\n{report['clients']} concurrent clients, {report['seconds']:.0f} s per phase\n")
    print("| phase | requests/s | p50 ms | p99 ms | non-200 |")
    print("|---|---|---|---|---|")
    for name, p in report["phases"].items():
        print(f"| {name} | {p['per_second']:,} | {p['p50_ms']} | {p['p99_ms']} | {p['failures']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/api.py needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    return run_on_private_server(lambda s: measure(s, args.clients, args.seconds), render, as_json=args.json,
                                 durable=False, prefix="civicsync-bench-api-")


if __name__ == "__main__":
    sys.exit(main())
