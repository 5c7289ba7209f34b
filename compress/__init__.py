"""compress: prune, quantize and verify PyTorch models as small ONNX artifacts.

    from compress.pipeline import run_pipeline
    from compress.config import load_pipeline

    config = load_pipeline("pipelines/mnist.toml")
    report = run_pipeline(config, out_dir="runs/mnist")
"""

__version__ = "0.1.0"
