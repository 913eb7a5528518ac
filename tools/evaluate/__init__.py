"""``edgewatch evaluate``: a float model and its quantized version side by side on a labelled set
(accuracy, output agreement, per-layer divergence, latency) and the accuracy-and-speed gate."""
