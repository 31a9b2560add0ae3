"""Everything about checkpoints: the on-disk layout (layout.py), meta.json's record (meta.py),
saving and resuming the training state (training_state.py) and converting a checkpoint into an
export (convert.py).

training_state and convert import DeepSpeed-free torch only at call time where they can; import
them by module path (janus_pretrain.checkpoint.convert) rather than from this package, so that
reading the layout never pulls in DeepSpeed.
"""
from janus_pretrain.checkpoint.layout import (  # noqa: F401
    COMPLETE, LATEST, META, MODEL_STATES, CheckpointDir, CheckpointError, experts_file, rank_file, tag_for_step)
