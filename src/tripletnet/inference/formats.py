"""The export formats, in a module of their own so that the CLI lists them without importing torch."""

EXPORT_FORMATS = ("onnx", "torchscript")
