"""Extract: read source rows for batch flows (COPY out of a consistent snapshot)."""
