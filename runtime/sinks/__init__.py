"""Alert sinks. One plugin per module; each registers itself in SINKS."""
