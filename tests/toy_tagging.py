"""A toy task type, written the way a new one is added: this module + one registry line.

Token tagging with three tags: 0 for [CLS]/[SEP]/padding, 1 for a word piece
that starts with a vowel, 2 for any other piece. The model is a BERT encoder
with a per-token dense layer; the serving head returns the tags of raw text.
Nothing outside this module knows it exists: `tests/test_task_types.py`
registers it with `tfplm.tasks.register(TASK_TYPE)` and trains, evaluates and
exports it.
"""

import dataclasses

import keras
import tensorflow as tf

from tfplm.data import glue, pipeline
from tfplm.models import BertEncoder, BertTaskModel
from tfplm.tasks import base, serving
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

NUM_TAGS = 3


@keras.saving.register_keras_serializable(package="tfplm_toy")
class ToyTagger(BertTaskModel):
    """A `BertEncoder` with a tag classifier on every token; float32 logits [batch, seq, tags]."""

    def __init__(self, encoder, preprocessor=None, **kwargs):
        self.encoder = encoder
        self.tagger = keras.layers.Dense(NUM_TAGS, dtype=encoder.dtype_policy, name="tagger")
        inputs = dict(encoder.input)
        logits = self.tagger(encoder(inputs)["sequence_output"])
        logits = keras.layers.Activation("linear", dtype="float32", name="tag_logits")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self._set_preprocessor(preprocessor)


@dataclasses.dataclass
class ToyConfig:
    """Attributes:
    data_dir: a GLUE-style folder with SST-2/train.tsv and SST-2/dev.tsv (its sentences are used).
    vocab_file: vocab.txt of the random bert_tiny encoder.
    seq_length, global_batch_size: the usual.
    """

    data_dir: str = ""
    vocab_file: str = ""
    seq_length: int = 32
    global_batch_size: int = 16


class ToyTaggingTask(base.Task):
    def __init__(self, config):
        super().__init__(config)
        c = self.task_config
        self.preprocessor = BertPreprocessor(WordPieceTokenizer(c.vocab_file), c.seq_length)
        vocabulary = self.preprocessor.tokenizer.get_vocabulary()
        # Tag of each vocabulary id: the rule the model has to learn.
        self.tag_of_id = tf.constant(
            [0 if token.startswith("[") else 1 if token.lstrip("#")[:1] in "aeiou" else 2 for token in vocabulary]
        )

    def global_batch_size(self, split):
        return self.task_config.global_batch_size

    def build_model(self):
        encoder = BertEncoder.from_preset(
            "bert_tiny", vocab_size=self.preprocessor.tokenizer.vocabulary_size(), preprocessor=self.preprocessor
        )
        return ToyTagger(encoder)

    def build_inputs(self, split, input_context=None):
        examples = glue.read_glue_split(self.task_config.data_dir, "sst2", split)
        texts = examples.texts[:256]
        dataset = pipeline.text_dataset(
            texts,
            preprocessor=self.preprocessor,
            batch_size=pipeline.per_replica_batch_size(self.global_batch_size(split), input_context),
            training=split == "train",
            input_context=input_context,
        )

        def label(inputs):
            tags = tf.gather(self.tag_of_id, inputs["input_word_ids"])
            return inputs, tags, tf.cast(inputs["input_mask"], tf.float32)

        return dataset.map(label)

    def build_losses(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def held_out_examples(self, limit):
        examples = glue.read_glue_split(self.task_config.data_dir, "sst2", "validation")
        return {"text": examples.texts[:limit]}


class ToyTaggingHead(serving.BertTextHead):
    """Raw text in; `tags` [batch, seq_length] (-1 on padding) and `tag_probabilities` out."""

    main_output = "tag_probabilities"

    def outputs(self, packed):
        probabilities = tf.nn.softmax(tf.cast(self.model(packed, training=False), tf.float32), axis=-1)
        tags = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"tags": tf.where(packed["input_mask"] > 0, tags, -1), "tag_probabilities": probabilities}


def toy_experiment():
    return base.ExperimentConfig(
        task=ToyConfig(),
        trainer=base.TrainerConfig(train_steps=60, steps_per_loop=30, eval_steps=4),
    )


TASK_TYPE = base.TaskType(
    name="toy_tagging",
    task=ToyTaggingTask,
    serving=ToyTaggingHead,
    models=(ToyTagger,),
    experiments={"toy/tagging": toy_experiment},
)
