"""Red team (issue 11 items 5-7, README exit-code table): operators' odd inputs against a live deployment:
malformed dead-letter ids, numbers out of range, NUL bytes, huge names, configs that are a directory,
empty, a YAML list, or an alias bomb. Every answer is exit 1 or 2 with one message, never a traceback,
and bad input is exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from civicsync.cli.app import app
from fix_db import Deployment

BAD_INPUT: list[tuple[str, ...]] = [
    ("dlq", "show", "nope"), ("dlq", "show", "warehouse:abc"), ("dlq", "show", ":1"), ("dlq", "show", "warehouse:"),
    ("dlq", "show", "nowhere:1"), ("dlq", "discard", "warehouse:abc"), ("dlq", "replay", "warehouse:x"),
    ("dlq", "list", "--flow", "NOPE"),
    ("runs", "--limit", "-1"), ("runs", "--limit", "99999999999999999999"),
    ("db", "seed", "--citizens", "-5"),
    ("apikey", "create", "x" * 5000, "--scope", "forecasts:write"),
    ("apikey", "create", "a\x00b", "--scope", "forecasts:write"),
    ("apikey", "revoke", "a\x00b"),
    ("reconcile", "NOPE"), ("reconcile", "F2\x00"), ("batch", "run", "F2\x00"),
]


# A well-formed id of no dead letter is "not found": exit 1 (as for an id that fits a bigint).
NOT_FOUND: list[tuple[str, ...]] = [
    ("dlq", "show", "warehouse:99999999999999999999"), ("dlq", "discard", "warehouse:99999999999999999999"),
    ("dlq", "replay", "warehouse:99999999999999999999"), ("dlq", "show", "warehouse:5"),
]


def _invoke(args: tuple[str, ...], env: dict[str, str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args), env={"CIVICSYNC_CONFIG": None, "COLUMNS": "200", **env})
    exc = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.output, exc


@pytest.fixture(scope="module")
def env(deployment: Deployment) -> dict[str, str]:
    return deployment.environ


@pytest.mark.parametrize("args", BAD_INPUT, ids=lambda a: " ".join(a)[:40].replace("\x00", "NUL"))
def test_bad_input_is_exit_2_without_a_traceback(env: dict[str, str], args: tuple[str, ...]) -> None:
    code, out, exc = _invoke(args, env)
    assert exc is None, f"traceback: {exc!r}"
    assert "Traceback" not in out
    assert code == 2, (code, out)


@pytest.mark.parametrize("args", NOT_FOUND, ids=lambda a: " ".join(a)[:40])
def test_an_id_of_no_dead_letter_is_one_message(env: dict[str, str], args: tuple[str, ...]) -> None:
    code, out, exc = _invoke(args, env)
    assert exc is None and "Traceback" not in out
    assert code in (1, 2) and out.count("\n") <= 2, (code, out)


def _bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join('*' + prev for _ in range(9))}]")
    return "\n".join(lines) + "\nversion: 1\n"


CONFIGS = {"directory": None, "empty": "", "list": "- 1\n- 2\n", "scalar": "42\n", "alias_bomb": _bomb(),
           "deep": "[" * 5000 + "]" * 5000 + "\n", "huge_int": "version: " + "9" * 5000 + "\n",
           "bad_utf8": b"version: 1\nflows: {\xff\xfe: 1}\n"}


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("command", [("validate",), ("flows",)])
def test_odd_config_files_are_exit_2(tmp_path: Path, kind: str, command: tuple[str, ...]) -> None:
    path = tmp_path / "c.yaml"
    content = CONFIGS[kind]
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    args = (*command, str(path)) if command == ("validate",) else (*command, "--config", str(path))
    code, out, exc = _invoke(args, {})
    assert exc is None, f"traceback: {exc!r}"
    assert code == 2, (code, out[-500:])
    assert len(out) < 5000  # one message per problem, not a dump
