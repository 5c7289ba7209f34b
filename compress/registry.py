"""Models by name.

    @register_model
    def simplenet(num_classes: int = 10, input_shape=(1, 28, 28)) -> nn.Module: ...

    model = build_model("simplenet", kwargs={"num_classes": 10}, input_shape=(1, 28, 28))
    model = build_model("torchvision:resnet18", kwargs={"num_classes": 10}, input_shape=(3, 32, 32))

The built-in definitions live in the top-level `models/` folder (installed as the package
`compress_models`); `compress_models.MODULES` lists the files to import, explicitly. A
family of models behind a prefix ("torchvision:<name>") is registered with
`@register_family(prefix)` on a function that turns the rest of the name into a factory.
A pipeline can also name a class in any Python file with `[model] path` and `class`: that
file's code runs, by design, so only point it at code you trust.

The builder contract: a factory or class is called with `num_classes` (in kwargs) and,
when its signature has an `input_shape` parameter, with the shape of one sample:
(C, H, W) for images, (F,) for tables.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from compress.errors import CompressError, closest

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}
_FAMILIES: dict[str, Callable[[str], ModelFactory]] = {}  # prefix -> name -> factory
_loaded = False


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register a factory function under its own name."""
    name = factory.__name__
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory


def register_family(prefix: str):
    """Register a function that resolves "<prefix>:<name>" to a factory (raising
    CompressError for an unknown name)."""

    def decorate(resolve: Callable[[str], ModelFactory]) -> Callable[[str], ModelFactory]:
        if prefix in _FAMILIES and _FAMILIES[prefix] is not resolve:
            raise ValueError(f"model family {prefix!r} is registered twice")
        _FAMILIES[prefix] = resolve
        return resolve

    return decorate


def list_families() -> dict[str, Callable[[str], ModelFactory]]:
    _load_builtin()
    return dict(sorted(_FAMILIES.items()))


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        package = importlib.import_module("compress_models")
        for module in package.MODULES:
            importlib.import_module(f"compress_models.{module}")
        _loaded = True


def list_models() -> dict[str, ModelFactory]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items()))


def describe(factory: ModelFactory) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.splitlines()[0] if doc else ""


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = closest(name, known)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}"


def get_factory(name: str) -> ModelFactory:
    models = list_models()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        return _FAMILIES[prefix](rest)
    if name not in models:
        known = [*models, *(f"{p}:<name>" for p in _FAMILIES)]
        raise CompressError(unknown_name_message("model", name, known))
    return models[name]


def factory_source(name: str) -> str:
    """Source text of the file that defines a registered model, plus the version of the
    library it comes from if any (part of cache keys)."""
    factory = get_factory(name)
    return Path(inspect.getsourcefile(factory)).read_text() + getattr(factory, "version", "")


def accepts_input_shape(factory: ModelFactory) -> bool:
    """Whether the factory or class names an `input_shape` parameter."""
    try:
        return "input_shape" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins or C extensions without a signature
        return False


def _exit_status(exc: SystemExit) -> str:
    """sys.exit's argument as the user sees it: an exit status, or the message it printed."""
    if exc.code is None or isinstance(exc.code, int):
        return f"exit status {exc.code or 0}"
    return f"message {_first_line(exc.code)!r}, exit status 1"


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _import_quietly(spec, module, path: Path, printed: io.StringIO) -> None:
    """Run the model file as a module. It sees the command line `python <file>` (not
    compress's own arguments, which a module-level argparse would reject), and what it
    prints is held back: shown after a successful import, summed up in the error otherwise
    (so a failure stays one line)."""
    argv = sys.argv
    sys.argv = [str(path)]
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    sys.stderr.write(printed.getvalue())


def load_user_class(path: str | Path, class_name: str) -> type[nn.Module]:
    """Import `class_name` from the Python file at `path` (runs that file's code)."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"model file {path} does not exist")
    module_name = f"compress_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    printed = io.StringIO()
    try:
        _import_quietly(spec, module, path, printed)
    except SystemExit as exc:  # a training script's argparse or sys.exit() at module level
        del sys.modules[module_name]
        said = _last_line(printed.getvalue())
        raise CompressError(
            f"model file {path} called sys.exit() while being imported ({_exit_status(exc)}"
            + (f"; it printed {said!r}" if said else "")
            + '): put the script\'s own code under `if __name__ == "__main__":`'
        ) from None
    except Exception as exc:  # KeyboardInterrupt is not an Exception: Ctrl-C stays Ctrl-C
        del sys.modules[module_name]
        raise CompressError(
            f"model file {path} failed to import: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        classes = [
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module_name
        ]
        raise CompressError(
            unknown_name_message(f"nn.Module class in {path}:", class_name, classes)
        )
    return cls


def build_model(
    name: str | None = None,
    path: str | Path | None = None,
    class_name: str | None = None,
    kwargs: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """A model from the registry (`name`) or from a user's file (`path` + `class_name`).

    `input_shape` (one sample's shape) is passed when the factory accepts it and the
    kwargs do not already set it; without it, factories keep their default (MNIST's)."""
    kwargs = dict(kwargs or {})
    if name is not None:
        factory = get_factory(name)
        label = f"model {name!r}"
    else:
        factory = load_user_class(path, class_name)
        label = f"model {class_name} from {path}"
    given = dict(kwargs)
    if input_shape is not None and "input_shape" not in kwargs and accepts_input_shape(factory):
        kwargs["input_shape"] = tuple(input_shape)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise CompressError(f"{label} does not accept arguments {given}: {exc}") from None
    except SystemExit as exc:  # a constructor that parses the command line, say
        raise CompressError(f"building {label} called sys.exit() ({_exit_status(exc)})") from None
