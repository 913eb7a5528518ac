"""Output decoders (classify, yolo, ssd). One per module; each registers in POSTPROCESSORS."""
