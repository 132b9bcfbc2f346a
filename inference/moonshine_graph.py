"""Three inputs added to Moonshine's merged decoder, so rows of any shape decode in one batch.

The exported decoder has no attention masks and derives every token's position from the length
of its self-attention cache, so one batch could only hold clips of the same encoded length and
rows at the same decoding step. That wastes the decoder's strength: a step is bound by reading
its weights (the 32768 x 416 output projection alone is 54 MB), so eight rows cost about twice
one row. :func:`add_batch_inputs` rewrites the graph (both branches of its ``If``) with:

- ``encoder_attention_bias`` float ``[B, 1, 1, T]``: added to every cross-attention's scores
  before the softmax. 0 for a row's real encoder frames, a large negative number for the zero
  frames that pad it to the batch's longest clip, which then get exactly zero weight: the row
  decodes as if alone.
- ``decoder_attention_bias`` float ``[B, 1, S, P + S]``: added to every self-attention's scores
  (on top of the graph's own causal mask). It hides cache entries a row must not see: those of
  draft tokens it rejected (see ``moonshine``), and those other rows' longer steps left.
- ``position_ids`` int64 ``[B, S]``: each new token's position for the rotary embedding, in place
  of the graph's ``past length + arange(S)``, so rows at different positions share a step.

With zero biases and positions ``past + arange(S)`` the graph computes what it computed before.
This module only edits graphs; it never runs one.
"""

from __future__ import annotations

import onnx
import onnx.helper

POSITION_IDS = "position_ids"
DECODER_BIAS = "decoder_attention_bias"
ENCODER_BIAS = "encoder_attention_bias"
# The node output the export computes positions into (unsqueezed ``past + arange(S)``).
_POSITIONS = "/model/decoder/Unsqueeze_output_0"


class GraphEditError(ValueError):
    """The decoder graph is not the one these edits were written for."""


def add_batch_inputs(model: onnx.ModelProto) -> None:
    """Add the three inputs (see the module docstring) to the merged decoder, in place."""
    graph = model.graph
    if any(i.name == POSITION_IDS for i in graph.input):
        raise GraphEditError("the decoder already has the batch inputs")
    branch_node = next((n for n in graph.node if n.op_type == "If"), None)
    if branch_node is None:
        raise GraphEditError("no If node: not a merged (cache / no-cache) decoder")
    floats, ints = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    graph.input.extend(
        [
            onnx.helper.make_tensor_value_info(POSITION_IDS, ints, ["batch", "steps"]),
            onnx.helper.make_tensor_value_info(DECODER_BIAS, floats, ["batch", 1, "steps", "keys"]),
            onnx.helper.make_tensor_value_info(ENCODER_BIAS, floats, ["batch", 1, 1, "frames"]),
        ]
    )
    for attribute in branch_node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            _edit_branch(attribute.g)


def _edit_branch(branch: onnx.GraphProto) -> None:
    nodes: list[onnx.NodeProto] = []
    edits = {"self": 0, "cross": 0, "positions": 0}
    for node in branch.node:
        if node.op_type == "Softmax":
            if "/self_attn/" in node.name:
                bias, kind = DECODER_BIAS, "self"
            elif "/encoder_attn/" in node.name:
                bias, kind = ENCODER_BIAS, "cross"
            else:
                raise GraphEditError(f"a softmax outside attention: {node.name}")
            biased = f"{node.input[0]}_biased"
            nodes.append(
                onnx.helper.make_node("Add", [node.input[0], bias], [biased], f"{node.name}_bias")
            )
            node.input[0] = biased
            edits[kind] += 1
        for index, name in enumerate(node.input):
            if name == _POSITIONS:
                node.input[index] = POSITION_IDS
                edits["positions"] += 1
        nodes.append(node)
    if edits["self"] != edits["cross"] or not edits["self"] or edits["positions"] != 1:
        raise GraphEditError(f"{branch.name}: unexpected attention layout {edits}")
    del branch.node[:]
    branch.node.extend(nodes)
