"""TF Hub's BERT interface: a preprocessor SavedModel and an encoder SavedModel.

Code written for the TF Hub BERTs works with these unchanged:

    preprocessor = hub.load("out/preprocessor")   # or hub.KerasLayer(...)
    encoder = hub.KerasLayer("out/encoder", trainable=True)
    outputs = encoder(preprocessor(text))          # pooled_output, sequence_output, ...

* preprocessor: `__call__(text)` → `input_word_ids`, `input_mask`,
  `input_type_ids` (int32 [batch, seq_length]); `tokenize(text)` → int32
  RaggedTensor [batch, tokens, 1] (TF Hub's [batch, words, pieces] shape; each
  word piece is its own group, so flattening gives the ids); and
  `bert_pack_inputs(segments, seq_length)` for one or two tokenized segments.
  The vocabulary is the asset `vocab_file`, with `do_lower_case`.
* encoder: a reusable SavedModel (`variables`, `trainable_variables`,
  `regularization_losses`) whose `__call__(inputs, training)` returns
  `pooled_output`, `sequence_output`, `encoder_outputs` (every block's output)
  and `default` (= pooled_output).
"""

import os
import shutil

import tensorflow as tf

from tfplm import publish
from tfplm.models import BertEncoder
from tfplm.tasks.serving import TOKENIZED_SPECS, UnsupportedExport, tf_variables, untracked
from tfplm.tokenizers import WordPieceTokenizer
from tfplm.tokenizers.wordpiece import pack_segments


class HubPreprocessor(tf.Module):
    """TF Hub's BERT preprocessor interface around a `WordPieceTokenizer`."""

    def __init__(self, tokenizer, vocab_file, seq_length):
        super().__init__(name="preprocessor")
        self.tokenizer = tokenizer
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.do_lower_case = tf.Variable(bool(tokenizer.lowercase), trainable=False)
        self.seq_length = seq_length

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, text):
        ids = self.tokenizer.tokenize(text)
        pieces = ids.flat_values
        return ids.with_flat_values(tf.RaggedTensor.from_row_lengths(pieces, tf.ones_like(pieces, tf.int64)))

    @tf.function
    def bert_pack_inputs(self, segments, seq_length):
        t = self.tokenizer
        segments = [s.merge_dims(-2, -1) if s.ragged_rank > 1 else s for s in segments]
        return pack_segments(segments, seq_length, t.cls_token_id, t.sep_token_id, t.pad_token_id)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, text):
        t = self.tokenizer
        return pack_segments(t.tokenize(text), self.seq_length, t.cls_token_id, t.sep_token_id, t.pad_token_id)

    def trace(self):
        for count in (1, 2):
            for rank in (2, 3):
                spec = tf.RaggedTensorSpec([None] * rank, tf.int32, ragged_rank=rank - 1)
                self.bert_pack_inputs.get_concrete_function([spec] * count, tf.TensorSpec([], tf.int32))
        return {"serving_default": self.__call__.get_concrete_function()}


class HubEncoder(tf.Module):
    """TF Hub's BERT encoder interface (a reusable SavedModel) around a `BertEncoder`."""

    # Plain attributes in the reusable-SavedModel API, properties in tf.Module.
    variables = trainable_variables = ()

    def __init__(self, encoder):
        super().__init__(name="encoder")
        with untracked(self):  # its variables are tracked below, once
            self.encoder = encoder
        self.variables = tf_variables(encoder)
        self.trainable_variables = tf_variables(encoder, trainable_only=True)
        self.regularization_losses = []

    @tf.function
    def __call__(self, inputs, training=False):
        outputs = self.encoder({k: tf.cast(inputs[k], tf.int32) for k in TOKENIZED_SPECS}, training=training)
        return {
            "pooled_output": outputs["pooled_output"],
            "sequence_output": outputs["sequence_output"],
            "encoder_outputs": list(outputs["encoder_outputs"]),
            "default": outputs["pooled_output"],
        }

    def trace(self):
        for training in (False, True):
            self.__call__.get_concrete_function(TOKENIZED_SPECS, training=training)
        return None  # no signature: signatures cannot return the list `encoder_outputs`


def encoder_of(model):
    """The `BertEncoder` a TF Hub export of `model` holds: the model itself or its `encoder`."""
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, BertEncoder):
        raise UnsupportedExport(f"TF Hub's BERT layout needs a BERT model, not a {type(model).__name__}")
    return encoder


def check(model, seq_length=None):
    """Raises what `hub` would (UnsupportedExport, ValueError) before anything is written; returns
    (the encoder, its tokenizer, the preprocessor's seq_length)."""
    encoder = encoder_of(model)
    tokenizer = model.tokenizer
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise ValueError("this model has no WordPiece tokenizer: load it with from_pretrained(...) or build it with its preprocessor")
    seq_length = seq_length or model.preprocessor.seq_length
    if not 3 <= seq_length <= encoder.max_length:
        raise ValueError(f"seq_length={seq_length}; expected 3 to {encoder.max_length} (the encoder's max_length)")
    return encoder, tokenizer, seq_length


def write_hub(model, directory, seq_length=None):
    """Writes `directory/preprocessor` and `directory/encoder` (not atomically: see `hub`)."""
    encoder, tokenizer, seq_length = check(model, seq_length)
    # The vocabulary goes aside inside `directory` (copied into the preprocessor's
    # assets, then deleted), so a killed export leaves nothing in /tmp.
    vocabulary_dir = os.path.join(directory, ".vocabulary")
    os.makedirs(vocabulary_dir)
    (vocab_file,) = tokenizer.save_vocabulary(vocabulary_dir)
    preprocessor = HubPreprocessor(tokenizer, vocab_file, seq_length)
    tf.saved_model.save(preprocessor, os.path.join(directory, "preprocessor"), signatures=preprocessor.trace())
    shutil.rmtree(vocabulary_dir)
    hub_encoder = HubEncoder(encoder)
    hub_encoder.trace()
    tf.saved_model.save(hub_encoder, os.path.join(directory, "encoder"))
    return os.path.join(directory, "preprocessor"), os.path.join(directory, "encoder")


def hub(model, export_dir, seq_length=None):
    """Writes `export_dir/preprocessor` and `export_dir/encoder` in TF Hub's BERT layout.

    The folder appears whole or not at all (`tfplm.publish`).

    Args:
        model: a `BertEncoder` (or a `BertClassifier` / `BertPretrainer`, whose
            encoder is exported) with its preprocessor, as `from_pretrained`
            and the tasks build it.
        export_dir: a new directory.
        seq_length: the preprocessor's default length; default that of
            `model.preprocessor`.

    Returns:
        (preprocessor path, encoder path).
    """
    check(model, seq_length)
    export_dir = os.path.abspath(os.fspath(export_dir))
    with publish.directory(export_dir) as tmp:
        write_hub(model, tmp, seq_length)
    return os.path.join(export_dir, "preprocessor"), os.path.join(export_dir, "encoder")


def hub_predict(export_dir, seq_length):
    """`predict` for a TF Hub export (for the export report): {"text"[, "text_b"]: [str]} →
    the encoder's `pooled_output` and `sequence_output`."""
    preprocessor = tf.saved_model.load(os.path.join(export_dir, "preprocessor"))
    encoder = tf.saved_model.load(os.path.join(export_dir, "encoder"))

    def predict(examples):
        segments = [preprocessor.tokenize(tf.constant(examples[n], tf.string)) for n in ("text", "text_b") if n in examples]
        inputs = preprocessor.bert_pack_inputs(segments, tf.constant(seq_length))
        outputs = encoder(inputs, training=False)
        return {name: outputs[name].numpy() for name in ("pooled_output", "sequence_output")}

    return predict
