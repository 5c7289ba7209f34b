"""compress: prune, quantize and verify PyTorch models as small ONNX artifacts.

    from compress import load_pipeline, run_pipeline

    config = load_pipeline("pipelines/mnist.toml")
    report = run_pipeline(config, out_dir="runs/mnist")   # a compress.results.RunReport
    for artifact in report.artifacts:
        print(artifact.name, artifact.deploy_bytes, artifact.accuracy)

The names are imported when first used (PEP 562), so that `import compress` (and
`compress --version`) does not load torch.
"""

from compress.version import __version__  # pyproject.toml reads it from here

__all__ = ["__version__", "load_pipeline", "run_pipeline"]


def __getattr__(name: str):
    if name == "load_pipeline":
        from compress.config import load_pipeline

        return load_pipeline
    if name == "run_pipeline":
        from compress.pipeline import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'compress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
