"""Refuse a SavedModel whose graph could do more than compute: looked at before anything is loaded.

A SavedModel is a program, not data: its functions can hold any TensorFlow op, including ones that
read and write files (`WriteFile`, `ReadFile`, `SaveV2` with a path of the author's choosing), run
shell-like side effects through `PyFunc`, or talk to the network. Loading one and calling its
signature, as an import must to convert it, runs those ops with the operator's rights. So the
graph is read as plain protobuf first and every op of every function must be on `MODEL_OPS`, a
short list of what an anomaly detector's forward pass uses. The only exception is the checkpoint
save/restore pair TensorFlow writes into every SavedModel (`CHECKPOINT_FUNCTION`): there the
checkpoint ops are allowed, and no other function may call those two.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from app.domain.errors import ModelError

log = logging.getLogger(__name__)

# saved_model.pb of a small autoencoder is a few hundred KB; a larger graph is not a microcontroller model.
MAX_GRAPH_BYTES = 16 * 1024 * 1024
# The forward pass of the dense/convolutional autoencoders this application deploys, plus the plumbing
# TensorFlow puts around it (constants, variable reads, calls between its own functions).
MODEL_OPS = frozenset({
    "Const", "Identity", "IdentityN", "NoOp", "Placeholder", "PlaceholderWithDefault", "ReadVariableOp",
    "VarHandleOp", "StatefulPartitionedCall", "PartitionedCall", "StopGradient",
    "MatMul", "BatchMatMulV2", "BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv", "DivNoNan", "Neg",
    "Maximum", "Minimum", "Square", "Sqrt", "Rsqrt", "Exp", "Log", "Abs", "Pow",
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softmax", "Softplus",
    "Conv2D", "Conv1D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "FusedBatchNormV3",
    "Reshape", "Squeeze", "ExpandDims", "Shape", "StridedSlice", "Pack", "Unpack", "ConcatV2", "Transpose",
    "Cast", "Mean", "Sum", "Pad", "Fill", "Range", "Tile", "Slice", "Split", "ZerosLike", "OnesLike",
})
# The variable save/restore functions TensorFlow adds to every SavedModel, and the ops they may hold.
CHECKPOINT_FUNCTION = re.compile(r"__inference__traced_(save|restore)_\d+")
CHECKPOINT_OPS = frozenset({
    "SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin", "StaticRegexFullMatch",
    "Select", "DisableCopyOnRead", "AssignVariableOp",
})
# Outside any function: creating the variables the functions read.
TOP_LEVEL_OPS = MODEL_OPS | {"AssignVariableOp", "VarIsInitializedOp"}
# Ops named in an error message at most (a hostile graph can hold thousands).
MAX_NAMED_OPS = 8


def _callees(node, functions: set[str]) -> set[str]:
    """Functions a node calls: by op name, or through a function-valued attribute (f, then_branch...)."""
    out = {node.op} & functions
    for value in node.attr.values():
        if value.func.name:
            out.add(value.func.name)
        out.update(f.name for f in value.list.func)
    return out


def _check_calls(node, names: set[str], checkpoint: set[str], refused: set[str]) -> None:
    """A call must stay inside the SavedModel's own (checked) functions and never reach the checkpoint pair."""
    callees = _callees(node, names)
    refused.update(f"a call to {name}, which the SavedModel does not hold" for name in callees - names)
    if callees & checkpoint:
        refused.add(f"{node.op} calling the checkpoint writer")


def check_savedmodel(path: Path) -> None:
    """ModelError naming the offending ops unless every op of the SavedModel in `path` is allowed."""
    pb = Path(path) / "saved_model.pb"
    size = pb.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise ModelError(f"the SavedModel in {Path(path).name} has a {size}-byte graph: not a microcontroller model")
    from google.protobuf.message import DecodeError

    from app.ml.tfimport import saved_model_proto

    saved = saved_model_proto()()
    try:
        saved.ParseFromString(pb.read_bytes())
    except DecodeError as exc:
        raise ModelError(f"the SavedModel in {Path(path).name} is not readable (saved_model.pb: {exc})") from exc
    refused: set[str] = set()
    for meta in saved.meta_graphs:
        library = {f.signature.name: f for f in meta.graph_def.library.function}
        names = set(library)
        checkpoint = {name for name in names if CHECKPOINT_FUNCTION.fullmatch(name)}
        for node in meta.graph_def.node:  # outside functions: TensorFlow's own saver may call the checkpoint pair
            if node.op not in TOP_LEVEL_OPS | names:
                refused.add(node.op)
            _check_calls(node, names, set(), refused)
        for name, function in library.items():
            allowed = MODEL_OPS | CHECKPOINT_OPS if name in checkpoint else MODEL_OPS
            for node in function.node_def:
                if node.op not in allowed and node.op not in names:
                    refused.add(node.op)
                _check_calls(node, names, set() if name in checkpoint else checkpoint, refused)
    if refused:
        shown = ", ".join(sorted(refused)[:MAX_NAMED_OPS]) + (" ..." if len(refused) > MAX_NAMED_OPS else "")
        log.warning("refused the SavedModel in %s: ops %s", path, shown)
        raise ModelError(f"the SavedModel in {Path(path).name} holds operations a model does not need ({shown}); "
                         "it is not loaded (a graph can read or write files). Export the model as .keras instead")
