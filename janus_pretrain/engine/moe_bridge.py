"""Tell DeepSpeed that the model has MoE layers, although ours are not deepspeed.moe.layer.MoE.

DeepSpeedEngine sets `has_moe_layers` only when it finds a deepspeed.moe.layer.MoE module. That
flag makes ZeRO-1/2 reduce and partition expert parameters (p.allreduce = False, p.group_name)
over their expert-data-parallel group instead of the whole world, and makes it average the
expert part of the gradient norm correctly. Our MoE is our own (dropless, sort-based dispatch;
DeepSpeed's capacity gate would materialise tokens x experts x capacity), so we register one
parameter-less marker per MoE layer that is an instance of DeepSpeed's MoE class.

The markers hold no parameters or buffers (state_dict keys are unchanged) and declare zero local
experts, so DeepSpeed's own per-expert checkpoint files (which parse its
'.deepspeed_moe.experts.deepspeed_experts.<local id>' names) are empty on save and skipped on
load; our checkpoint code writes and restores the expert weights of every expert-parallel rank
(checkpoint.py: experts_ep<E>.pt). The ZeRO optimizer partitions are per rank anyway.

Gradient scaling needs no fix: ZeRO divides every gradient by the data-parallel world size and
sums expert gradients over the expert-data-parallel group. An expert's local gradient already
sums the contributions of tokens from every rank of its expert-parallel group (the backward
all-to-all brings them back), so sum over expert-data-parallel ranks / world size equals the
gradient of the mean over all ranks' losses, as for dense parameters. The EP equivalence test
(tests/test_engine_parallel.py) checks this with clipping on.
"""
from __future__ import annotations

from deepspeed.moe.layer import MoE
from torch import nn

MARKER_ATTRIBUTE = "deepspeed_moe_markers"


class DeepSpeedMoEMarker(MoE):
    """Parameter-less stand-in that DeepSpeed's isinstance(module, MoE) scans find."""

    def __init__(self, layer_name: str, num_experts: int, ep_size: int, group_name: str):
        nn.Module.__init__(self)  # deliberately not MoE.__init__: it would build DeepSpeed's experts
        self.layer_name = layer_name
        self.num_experts = num_experts
        self.ep_size = ep_size
        self.expert_group_name = group_name
        self.num_local_experts = 0  # our checkpoint code saves the experts, not DeepSpeed's

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """DeepSpeed calls this on every MoE; our groups already exist (distributed.py)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("DeepSpeedMoEMarker is a marker for DeepSpeed, not a layer to run")


def attach_moe_markers(model: nn.Module, ep_size: int, group_name: str) -> int:
    """Register one marker per MoE layer of `model` (model.moe_layers()); returns their count."""
    layers = model.moe_layers() if hasattr(model, "moe_layers") else []
    if not layers:
        return 0
    markers = nn.ModuleList(DeepSpeedMoEMarker(getattr(layer, "layer_name", f"moe{i}"), layer.num_experts,
                                               ep_size, group_name) for i, layer in enumerate(layers))
    model.add_module(MARKER_ATTRIBUTE, markers)
    return len(markers)
