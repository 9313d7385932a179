"""Jobs: batch runs (full, incremental, aggregate) with retries and run history."""
