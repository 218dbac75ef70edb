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
import tempfile

import tensorflow as tf

from tfplm.export.serving import TOKENIZED_SPECS, tf_variables
from tfplm.models import BertClassifier, BertEncoder, BertPretrainer
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


def _save_atomically(module, directory):
    signatures = module.trace()
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hub(model, export_dir, seq_length=None):
    """Writes `export_dir/preprocessor` and `export_dir/encoder` in TF Hub's BERT layout.

    Args:
        model: a `BertEncoder` (or a `BertClassifier` / `BertPretrainer`, whose
            encoder is exported) with its `tokenizer`, as `from_pretrained`
            gives it.
        export_dir: a new or empty directory.
        seq_length: the preprocessor's default length; default that of
            `model.preprocessor`, else 128.

    Returns:
        (preprocessor path, encoder path).
    """
    encoder = model.encoder if isinstance(model, (BertClassifier, BertPretrainer)) else model
    if not isinstance(encoder, BertEncoder):
        raise ValueError(f"TF Hub's BERT layout needs a BERT model, not a {type(model).__name__}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: load it with from_pretrained(...) or set `model.tokenizer`")
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        raise ValueError(f"{export_dir} is not empty; choose a new directory for the TF Hub export")
    preprocessor = getattr(model, "preprocessor", None)
    seq_length = seq_length or (preprocessor.seq_length if preprocessor is not None else 128)
    paths = os.path.join(export_dir, "preprocessor"), os.path.join(export_dir, "encoder")
    with tempfile.TemporaryDirectory() as vocabulary_dir:
        (vocab_file,) = tokenizer.save_vocabulary(vocabulary_dir)
        _save_atomically(HubPreprocessor(tokenizer, vocab_file, seq_length), paths[0])
    _save_atomically(HubEncoder(encoder), paths[1])
    return paths
