"""Model nodes written with mleap's generic node writer: an op, its attributes and its ports.

`jobs.bundle.export` writes preprocessing nodes and linear regression with it, and
`jobs.bundle.boosters` the vector_assembler in front of a booster.
"""

from __future__ import annotations

from typing import Any


def input_shapes(widths: list[int], tensor: bool = False) -> dict[str, Any]:
    """mleap's `input_shapes` description of a vector_assembler's inputs."""
    shapes = []
    for width in widths:
        if tensor:
            shapes.append({"shape": "tensor", "tensor_shape": {"dimensions": [{"size": width}]}})
        else:
            shapes.append({"shape": "scalar"})
    return {"data_shape": shapes}


class GenericNode:
    """A pipeline step that mleap's generic node writer serialises (op, attributes, ports)."""

    serializable = True

    def __init__(
        self,
        serializer: Any,
        op: str,
        name: str,
        inputs: list[str],
        output: str,
        attributes: list[tuple[str, Any]],
    ) -> None:
        self._serializer = serializer()
        self.op = op
        self.name = name
        # MLeap's port names: numbered for an assembler, "features"/"prediction" for a model.
        if op == "vector_assembler":
            self.inputs = [{"name": c, "port": f"input{i}"} for i, c in enumerate(inputs)]
        else:
            port = "features" if op == "linear_regression" else "input"
            self.inputs = [{"name": inputs[0], "port": port}]
        out_port = "prediction" if op == "linear_regression" else "output"
        self.outputs = [{"name": output, "port": out_port}]
        self.attributes = attributes

    def serialize_to_bundle(self, path: str, model_name: str) -> None:
        self._serializer.serialize(
            self, path, model_name, self.attributes, self.inputs, self.outputs
        )
