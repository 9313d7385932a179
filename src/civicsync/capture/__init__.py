"""Capture: PostgreSQL logical replication (pgoutput) → change events."""
