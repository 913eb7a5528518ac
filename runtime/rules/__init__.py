"""Alert rules. One plugin per module; each registers itself in RULES."""
