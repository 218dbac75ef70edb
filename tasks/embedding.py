"""Text encoders: serving a `BertEncoder` (pooled and per-token outputs).

No training task yet: encoders are trained by the pretraining and fine-tuning
task types, and exported on their own through this head (sentence embeddings
and similarity come in the sentence-embedding issue).
"""

import tensorflow as tf

from tfplm.models import BertEncoder
from tfplm.tasks import base, serving


class EncoderHead(serving.BertTextHead):
    """Serves a `BertEncoder`: raw text in; `pooled_output` [batch, hidden] and
    `sequence_output` [batch, length, hidden] out, where length is the
    request's longest packed text (at most `seq_length`; TFLite: `seq_length`)."""

    main_output = "pooled_output"

    def outputs(self, packed):
        outputs = self.model(packed, training=False)
        return {name: tf.cast(outputs[name], tf.float32) for name in ("pooled_output", "sequence_output")}


TASK_TYPE = base.TaskType(name="encoder", task=None, serving=EncoderHead, models=(BertEncoder,))
