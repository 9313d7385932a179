"""Tables that stay readable at any width: side by side when they fit, one record per block when not.

rich shrinks a table that is too wide by cutting its cells ("outc…", "writ…"), which is what a
report piped to a file or a CI log (80 columns when stdout is not a terminal) used to show.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class FitTable:
    """Rows under headers, rendered as a table when its natural width fits the console, else as one
    wrapped line per row (``header value`` pairs), so that no value is ever cut."""

    def __init__(self, headers: Sequence[str], title: str | None = None, *, justify_right: Sequence[str] = ()
                 ) -> None:
        self.headers = list(headers)
        self.title = title
        self.justify_right = set(justify_right)
        self.rows: list[list[RenderableType]] = []

    def add_row(self, *cells: RenderableType | None) -> None:
        """Add one row (as many cells as headers; strings may hold rich markup; None shows empty)."""
        self.rows.append(["" if c is None else c for c in cells])

    def table(self) -> Table:
        """The side-by-side form."""
        table = Table(title=self.title)
        for h in self.headers:
            table.add_column(h, justify="right" if h in self.justify_right else "left")
        for row in self.rows:
            table.add_row(*row)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        table = self.table()
        natural = Measurement.get(console, options.update_width(100_000), table).maximum  # unclamped
        if natural <= options.max_width:
            yield table
            return
        if self.title:
            yield Text(self.title, style="table.title")
        for row in self.rows:
            yield self._record(row)

    def _record(self, row: list[RenderableType]) -> Text:
        """One row as wrapped text: ``F12 feedback: outcome ok · read 1,204 · ...`` (the first two
        cells label it), so a narrow console folds it at word boundaries instead of cutting values."""
        cells = [Text.from_markup(c) if isinstance(c, str) else Text(str(c)) for c in row]
        label = Text(" ").join(cells[:2])
        label.stylize("bold")
        pairs = [Text.assemble(f"{h} ", c) for h, c in zip(self.headers[2:], cells[2:], strict=True)]
        return Text.assemble("• ", label, ": ", Text(" · ").join(pairs))
