"""Readers of other libraries' checkpoints: one module per source format.

Each reader returns a `Checkpoint` (config + tensors under tfplm weight paths,
from `common.PARTS` + tokenizer); `tfplm.models.families` says which reader
reads which architecture, and `tfplm.models.pretrained` builds the model and
assigns the weights.
"""

from tfplm.models.checkpoints.common import Checkpoint, CheckpointError

__all__ = ["Checkpoint", "CheckpointError"]
