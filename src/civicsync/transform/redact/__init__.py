"""Free-text redaction: normalisation (:mod:`.normalise`), detection (:mod:`.detect`) and the person's
own known values (:mod:`.known`)."""
