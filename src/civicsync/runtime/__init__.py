"""Runtime: the CDC worker, dead-letter replay."""
