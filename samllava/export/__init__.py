"""Export of the detection part to ONNX and a runner without torch (docs/export.md)."""
