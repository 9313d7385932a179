"""Every command against the README's exit-code contract: 0 ok, 1 the work failed, 2 the command or
config is wrong. Each bad input is tried on every command it applies to; no traceback may reach the
user. In-process (typer's CliRunner) for speed; ``run`` and ``cdc run``, which install signal handlers,
as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from civicsync.cli.app import app
from civicsync.localpg import free_port

DEAD = f"host=127.0.0.1 port={free_port()} dbname=x user=x connect_timeout=2"
GOOD_ENV = {"CIVICSYNC_WAREHOUSE_DSN": DEAD, "CIVICSYNC_CITIZEN_DSN": DEAD, "CIVICSYNC_PSEUDONYM_KEY": "k" * 20}

# Every command that reads the config, with arguments that are fine in themselves.
CONFIG_COMMANDS: list[tuple[str, ...]] = [
    ("validate",), ("flows",), ("db", "init"), ("db", "seed", "--citizens", "10"), ("batch", "run", "F2"),
    ("runs",), ("cdc", "run"), ("status",), ("dlq", "list"), ("dlq", "show", "citizen:1"),
    ("dlq", "replay", "--all"), ("dlq", "discard", "citizen:1"), ("run",), ("reconcile", "F2"),
    ("apikey", "create", "ml", "--scope", "forecasts:write"), ("apikey", "list"), ("apikey", "revoke", "ml"),
]
SIGNAL_COMMANDS = {("run",), ("cdc", "run")}


def civicsync(args: tuple[str, ...], env: dict[str, str]) -> tuple[int, str]:
    """Exit code and everything printed; a command that installs signal handlers runs in a subprocess."""
    if args[:2] in SIGNAL_COMMANDS or args[:1] in SIGNAL_COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True,
                              timeout=60, env={"PATH": os.environ["PATH"], "COLUMNS": "200", **env}, check=False)
        return proc.returncode, proc.stdout + proc.stderr
    result = CliRunner().invoke(app, list(args), env={"CIVICSYNC_CONFIG": None, **env})
    # An exception other than typer's exit is a traceback for the user, whatever the code.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _with_config(args: tuple[str, ...], path: Path) -> tuple[str, ...]:
    return (*args, "--config", str(path)) if args != ("validate",) else ("validate", str(path))


def _config_cases() -> list[tuple[str, tuple[str, ...]]]:
    return [(bad, args) for bad in ("binary", "missing_env", "malformed_dsn", "no_such_file",
                                    "undeclared_api_connection", "ambiguous_old_form") for args in CONFIG_COMMANDS]


@pytest.mark.parametrize(("bad", "args"), _config_cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_bad_config_is_exit_2_for_every_command(tmp_path: Path, bad: str, args: tuple[str, ...]) -> None:
    from civicsync.config.loader import reference_config_path

    path = tmp_path / "civicsync.yaml"
    env = dict(GOOD_ENV)
    text = reference_config_path().read_text()
    if bad == "binary":
        path.write_bytes(b"\x87\x00\xff\xfe" + os.urandom(200))
    elif bad == "missing_env":
        path.write_text(text)
        del env["CIVICSYNC_CITIZEN_DSN"]
    elif bad == "malformed_dsn":
        path.write_text(text)
        env["CIVICSYNC_WAREHOUSE_DSN"] = "host=== hunter2-password"
    elif bad == "undeclared_api_connection":
        path.write_text(text + "\nservice:\n  api:\n    connection: portal\n")
    elif bad == "ambiguous_old_form":  # an older form that contradicts the flow (README "Older config files")
        path.write_text(text.replace("    incremental: {column: updated_at}\n",
                                     "    mode: full\n    incremental: {column: updated_at}\n", 1))
    code, output = civicsync(_with_config(args, path), env)
    assert code == 2, output
    assert "Traceback" not in output and "hunter2" not in output
    assert "config error" in output


BAD_INPUTS: list[tuple[tuple[str, ...], str]] = [
    (("batch", "run", "NOPE"), "no flow called 'NOPE'"),
    (("batch", "run", "F3"), "cdc flow; it has no batch run"),
    (("runs", "--flow", "NOPE"), "no flow called 'NOPE'"),
    (("run", "--flow", "NOPE"), "no flow called 'NOPE'"),
    (("run", "--flow", "F2", "--flow", "NOPE", "--no-api"), "no flow called 'NOPE'"),
    (("cdc", "run", "--flow", "NOPE"), "no CDC flow matches"),
    (("reconcile", "NOPE"), "NOPE"),
    (("dlq", "show", "nope"), "DATABASE:ID"),
    (("dlq", "list", "--flow", "NOPE"), "NOPE"),
    (("dlq", "replay", "--flow", "NOPE"), "NOPE"),
    (("dlq", "discard", "nosuchdb:1"), "nosuchdb"),
    (("apikey", "create", "bad name", "--scope", "admin:read"), "name 'bad name'"),
    (("apikey", "create", "ml", "--scope", "admin:everything"), "unknown: admin:everything"),
    (("apikey", "create", "ml", "--scope", "admin:read", "--client", "a/b"), "client 'a/b'"),
    (("db", "seed", "--only", "nothing"), "--only"),
    (("runs", "--limit", "0"), "--limit"),
    (("batch", "run"), "Missing argument"),
    (("no-such-command",), "No such command"),
    (("demo", "--citizens", "1"), "--citizens"),
    (("reconcile",), "Missing argument"),
    (("apikey", "revoke"), "Missing argument"),
    (("apikey", "create", "ml"), "Missing option"),
    (("validate", "--bogus"), "No such option"),
    (("config", "migrate"), "Missing argument"),
    (("config", "migrate", "/no/such/civicsync.yaml"), "cannot read"),
]


@pytest.mark.parametrize(("args", "says"), [pytest.param(a, s, id=" ".join(a)) for a, s in BAD_INPUTS])
def test_bad_input_is_exit_2_with_a_clear_message(args: tuple[str, ...], says: str) -> None:
    code, output = civicsync(args, GOOD_ENV)  # the databases are unreachable: the input is refused first
    assert code == 2, output
    assert says in output and "Traceback" not in output


WORK_FAILS: list[tuple[str, ...]] = [
    ("db", "init"), ("batch", "run", "F2"), ("runs",), ("status",), ("dlq", "list"), ("dlq", "show", "citizen:1"),
    ("reconcile", "F2"), ("apikey", "list"), ("apikey", "revoke", "ml"),
    ("apikey", "create", "ml", "--scope", "admin:read"),
]


@pytest.mark.parametrize("args", WORK_FAILS, ids=" ".join)
def test_an_unreachable_database_is_exit_1(args: tuple[str, ...]) -> None:
    code, output = civicsync(args, GOOD_ENV)
    assert code == 1, output
    assert "cannot connect" in output or "unavailable" in output or "connection" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("args", [("validate",), ("validate", "--no-secrets"), ("flows",), ("--help",)],
                         ids=" ".join)
def test_good_input_is_exit_0(args: tuple[str, ...]) -> None:
    code, output = civicsync(args, GOOD_ENV)
    assert code == 0, output
