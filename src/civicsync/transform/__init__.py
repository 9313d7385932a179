"""Row transformation: column mapping, value maps and masking."""
