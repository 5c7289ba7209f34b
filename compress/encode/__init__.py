"""ONNX rewrites and weight encodings, each checked in onnxruntime."""
