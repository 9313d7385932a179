"""Issue 11 item 14: the demo's and the CLI's tables stay readable at 80 columns when stdout is not a
terminal (rich used to cut cells to "outc…", "writ…"). Rendered by rich itself to an 80-column,
non-terminal console."""

from __future__ import annotations

import io
import string
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from civicsync.cli import results_table
from civicsync.cli.demo import print_report


def render(renderable_or_report: Any, width: int = 80) -> str:
    file = io.StringIO()
    console = Console(file=file, width=width, force_terminal=False, color_system=None)
    if isinstance(renderable_or_report, dict):
        print_report(console, renderable_or_report, Path("/tmp/demo.env"), "dbname=smart_citizen")
    else:
        console.print(renderable_or_report)
    return file.getvalue()


def result(flow_id: str, flow: str, n: int, ok: bool = True) -> dict[str, Any]:
    return {"id": flow_id, "flow": flow, "ok": ok, "rows_read": n, "rows_written": n // 2, "rows_deleted": 7,
            "rows_rejected": 3, "conflicts": 11, "attempts": 2, "seconds": 12.345, "error": None}


REPORT = {
    "flows": [result("F1", "scheme_master", 120), result("F6", "application_submissions", 1_000_000, ok=False),
              result("F12", "feedback", 98_765)],
    "cdc": {"changes": [{"flow": "F4 decision_updates", "change": "an officer approves application 1234",
                         "latency_ms": 412.0}], "errors": []},
    "samples": [("F2 national id keep_last", "1234-5678-9012", "XXXX-XXXX-9012"),
                ("F12 comment redact", "call me on +91 98765 43210 or me@example.org",
                 "call me on [PHONE] or [EMAIL]")],
}


def _lines_fit(text: str, width: int = 80) -> None:
    assert all(len(line) <= width for line in text.splitlines()), text
    assert "…" not in text, text


def test_the_demo_report_is_whole_at_80_columns() -> None:
    text = render(REPORT)
    _lines_fit(text)
    flat = " ".join(text.split())
    for value in ("application_submissions", "outcome FAILED", "read 1,000,000", "written 500,000", "conflicts 11",
                  "attempts 2", "seconds 12.35", "XXXX-XXXX-9012", "[PHONE]", "412 ms"):
        assert value in flat, value


def test_a_wide_console_keeps_the_table() -> None:
    text = render(results_table([result("F12", "feedback", 5)]), width=160)
    assert "┃ id" in text and "│ F12 │ feedback │" in text


@settings(max_examples=50, deadline=None)
@given(flow=st.text(string.ascii_lowercase + "_", min_size=1, max_size=40), n=st.integers(0, 10**12),
       width=st.integers(40, 200))
def test_no_value_is_ever_cut(flow: str, n: int, width: int) -> None:
    text = render(results_table([result("F99", flow, n)], title="runs"), width=width)
    _lines_fit(text, width)
    joined = "".join(text.split())  # a long value may be folded over lines, never cut
    assert flow in joined and f"{n:,}" in joined


def test_flows_listing_is_whole_at_80_columns() -> None:
    from typer.testing import CliRunner

    from civicsync.cli.app import app, out

    env = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c",
           "CIVICSYNC_PSEUDONYM_KEY": "k" * 20, "CIVICSYNC_CONFIG": None}
    saved = out.width
    out.width = 80  # what rich picks when stdout is not a terminal
    try:
        result = CliRunner().invoke(app, ["flows"], env=env)
    finally:
        out.width = saved
    assert result.exit_code == 0, result.output
    _lines_fit(result.output)
    assert "application_submissions" in result.output and "citizen:public.application_documents" in " ".join(
        result.output.split())
