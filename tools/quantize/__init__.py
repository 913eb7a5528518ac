"""``edgewatch quantize``: ONNX static (QDQ) or dynamic INT8, gated by ``tools.evaluate``."""
