"""The audio front end inside an exported graph: which nodes are it, and its features alone.

    names = frontend_node_names(model)     # quantizers leave these float (nodes_to_exclude)
    part = frontend_model(model)           # waveforms -> features, the artifact's own nodes
    is_frontend_tensor("frontend.dft")     # its constants: not parameters of the model

A sound artifact is the front end (compress.data.features.FrontEnd, exported as the module
`frontend`) followed by the classifier. Its fixed constants keep their buffer names
(`frontend.dft`, `frontend.mel`, ...); the front end's nodes are the last node that reads
one of them and every node it depends on. Its Conv and MatMul constants are exact
transforms, not learned weights: int8 or int4 would only add error, so every quantizer
leaves them float, and sizes and sparsity count the classifier's parameters only.
"""

from __future__ import annotations

import onnx
import onnx.utils

PREFIX = "frontend."


def is_frontend_tensor(name: str) -> bool:
    return name.startswith(PREFIX)


def _last_frontend_node(model: onnx.ModelProto) -> int | None:
    readers = [
        i
        for i, node in enumerate(model.graph.node)
        if any(is_frontend_tensor(name) for name in node.input)
    ]
    return max(readers) if readers else None


def frontend_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes that compute the front end's features, in graph order ([] without one)."""
    last = _last_frontend_node(model)
    if last is None:
        return []
    nodes = model.graph.node
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    keep, todo = set(), [last]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [producer[name] for name in nodes[i].input if name in producer]
    return [nodes[i] for i in sorted(keep)]


def frontend_node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name for node in frontend_nodes(model)]


def frontend_output(model: onnx.ModelProto) -> str | None:
    """The tensor holding the standardized features [N, frames, coefficients]."""
    last = _last_frontend_node(model)
    return None if last is None else model.graph.node[last].output[0]


def frontend_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The artifact's front end alone: its input to the features (the same nodes)."""
    output = frontend_output(model)
    if output is None:
        raise ValueError("the model holds no audio front end")
    inferred = onnx.shape_inference.infer_shapes(model)
    extractor = onnx.utils.Extractor(inferred)
    return extractor.extract_model([model.graph.input[0].name], [output])
