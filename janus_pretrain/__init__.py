"""janus-pretrain: pretrain JanusDNA-style DNA foundation models with DeepSpeed."""
__version__ = "0.1.0"
