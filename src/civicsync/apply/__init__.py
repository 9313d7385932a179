"""Apply: write transformed rows to a target table (COPY into a stage, then one set-based merge)."""
