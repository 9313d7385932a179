"""One pipeline shape for every path: a change source, then transform and apply, then a checkpoint
committed in the target transaction (docs/architecture.md, "the path of one change event")."""
