"""Frame and sensor sources. One plugin per module; each registers itself in SOURCES."""
