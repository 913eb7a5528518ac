"""Inference backends. One plugin per module; each registers itself in BACKENDS."""
