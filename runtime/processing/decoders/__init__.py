"""Sensor payload decoders (json, csv, binary). One per module; each registers in DECODERS."""
