"""Built-in model definitions, one registered factory per architecture.

Add a model: write a file here with `@register_model` factories and list it in MODULES.
Each factory takes `num_classes` (the data set's) and, if it names the parameter,
`input_shape`: one sample's shape, (C, H, W) for images, (F,) for tables (default MNIST's
(1, 28, 28)). It returns an `nn.Module` that maps a normalized batch [N, *input_shape] to
logits [N, num_classes]. `zoo` adds "torchvision:<name>" for torchvision's classifiers.
"""

MODULES = ["mlp", "lenet", "resnet", "mlperf_tiny", "cnn1d", "zoo"]
