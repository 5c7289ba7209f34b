"""torchvision's classification models by name: `[model] name = "torchvision:resnet18"`.

The adaptation rule, the same for every model:
- built with `weights=None` (random initialisation, nothing is downloaded) and the
  pipeline's `kwargs` passed through to torchvision's builder;
- the builder's own `num_classes` argument sizes the classifier, so the classifier's last
  Linear (SqueezeNet: its final 1x1 conv) has one output per class; if a `kwargs` entry
  left the last Linear with another width, that Linear is replaced;
- the first convolution (the stem, the first Conv2d in module order) is replaced by one
  with the data's channels (1 for grayscale) when they differ from its 3, keeping its
  kernel, stride, padding and bias;
- nothing else changes: strides stay ImageNet's, so a 32x32 input ends in a 1x1 feature
  map (resnet18, mobilenet_v3_small work; inception_v3 needs >= 75x75 and says so).
  Vision transformers get `image_size` (maxvit: `input_size`) from the data unless set;
  googlenet and inception_v3 get `aux_logits = False` unless set (one output to train).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence

import torch.nn as nn
import torchvision
import torchvision.models as tvm

from compress.errors import CompressError
from compress.registry import ModelFactory, register_family


def classification_models() -> list[str]:
    """Names of torchvision's classification builders (no detection, segmentation, video)."""
    return sorted(tvm.list_models(module=tvm))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _adapt_first_conv(model: nn.Module, channels: int) -> None:
    name, conv = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None)
    )
    if conv is None or conv.in_channels == channels:
        return
    if conv.groups != 1:
        raise CompressError(
            f"cannot adapt the first convolution {name} (groups = {conv.groups}) "
            f"to {channels} channels"
        )
    _replace(
        model,
        name,
        nn.Conv2d(
            channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ),
    )


def _adapt_classifier(model: nn.Module, num_classes: int) -> None:
    name, linear = next(
        ((n, m) for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)),
        (None, None),
    )
    if linear is not None and linear.out_features != num_classes:
        _replace(
            model, name, nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None)
        )


def _defaults(arch: str, kwargs: dict, input_shape: Sequence[int]) -> dict:
    """Arguments some architectures need to run on the data's images at all."""
    extra = {}
    height, width = int(input_shape[1]), int(input_shape[2])
    if arch.startswith("vit_") and height == width:
        extra["image_size"] = height
    if arch.startswith("maxvit"):
        extra["input_size"] = (height, width)
    if arch in ("googlenet", "inception_v3"):
        extra["aux_logits"] = False
        extra["init_weights"] = True  # silences torchvision's warning about the default
    return {**extra, **kwargs}


@register_family("torchvision")
def torchvision_model(arch: str) -> ModelFactory:
    """Any torchvision classification model, weights=None, adapted to the data (models/zoo.py).

    Accepted names: those of torchvision.models.list_models(module=torchvision.models).
    """
    known = classification_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise CompressError(
            f"unknown torchvision model {arch!r}{hint}; the {len(known)} classification models are "
            "torchvision.models.list_models(module=torchvision.models)"
        )

    def factory(
        num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224), **kwargs
    ) -> nn.Module:
        if len(input_shape) != 3:
            raise CompressError(
                f"torchvision:{arch} needs images (C, H, W), got input shape {tuple(input_shape)}"
            )
        if "weights" in kwargs and kwargs["weights"] is not None:
            raise CompressError(
                "torchvision models are built without pretrained weights (weights = None); "
                "load your own state_dict with [model] weights"
            )
        kwargs.pop("weights", None)
        model = tvm.get_model(
            arch, weights=None, num_classes=num_classes, **_defaults(arch, kwargs, input_shape)
        )
        _adapt_first_conv(model, int(input_shape[0]))
        _adapt_classifier(model, num_classes)
        return model

    factory.__doc__ = (
        f"torchvision's {arch} (weights=None), adapted to the data's channels and classes."
    )
    factory.__module__ = __name__
    factory.version = (
        f"torchvision {torchvision.__version__}; {inspect.getsource(tvm.get_model_builder(arch))}"
    )
    return factory
