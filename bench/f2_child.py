"""One measured civicsync F2 run, in its own process (started by bench/batch_profiles.py).

Reads the DSNs and the pseudonym key from the environment (CIVICSYNC_*), loads the bundled
reference config, runs flow F2 once and prints one JSON line: the wall time measured here around
``run_batch`` (so interpreter start-up and imports are not counted), the run's own ``seconds``, its
counts, and this process's peak RSS (``ru_maxrss`` of RUSAGE_SELF, a kernel high-water mark).
The parent also reads the same figure from ``os.wait4`` for this very process.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from civicsync.config.loader import load_config, reference_config_path
from civicsync.jobs.batch import run_batch


def main() -> int:
    config = load_config(reference_config_path())
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = run_batch(config, "F2")
    seconds = time.perf_counter() - started
    result.raise_for_error()
    print(json.dumps({
        "seconds": seconds,
        "run_seconds": result.seconds,
        "counts": vars(result.counts),
        "rss_before_run_kb": rss_before_kb,
        "maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
