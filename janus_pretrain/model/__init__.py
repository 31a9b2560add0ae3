"""The Janus model: backbone, pretraining head, MoE and kernels."""
from janus_pretrain.model.janus import BackboneOutput, JanusForPretraining, JanusModel, JanusOutput, janus_readout
from janus_pretrain.model.moe import MoEFeedForward

__all__ = ["BackboneOutput", "JanusForPretraining", "JanusModel", "JanusOutput", "MoEFeedForward", "janus_readout"]
