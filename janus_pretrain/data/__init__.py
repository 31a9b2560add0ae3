"""Genome shards (data_prep side) and the streaming training/validation loaders (run side)."""
from janus_pretrain.data.loader import TokenEncoding, TrainStream, encode_crops
from janus_pretrain.data.manifest import ManifestError, mixture_weights, read_manifest
from janus_pretrain.data.valid_batches import validation_batches

__all__ = ["TokenEncoding", "TrainStream", "validation_batches", "read_manifest", "mixture_weights", "encode_crops", "ManifestError"]
