"""Built-in model definitions, one registered factory per architecture.

Add a model: write a file here with `@register_model` factories and list it in MODULES.
Each factory takes `num_classes` (the data set's) and returns an `nn.Module` that maps a
batch of normalized images [N, 1, 28, 28] to logits [N, num_classes].
"""

MODULES = ["mlp", "lenet"]
