"""Serving heads: what a task type's model takes and returns once exported.

Export (`tfplm.export`) knows nothing of task types. For a model it finds the
serving head of the model's task type (`tfplm.tasks.serving_head`) and asks it:

* `signatures()`: the SavedModel's signatures (raw text in; `serving_default`
  first), and `method_names` where TF Serving needs another than Predict;
* `warmup_inputs(examples)`: one real request per signature;
* `reference(examples)` and `compare(reference, outputs)`: what the export
  report checks each artifact against, and how;
* `tflite_function(flavour, seq_length)`: a batch-1 function for TFLite and
  its static length, if the type has one (else `UnsupportedExport`).

The head is the `tf.Module` that is saved: it tracks the model's variables
(TF Serving's session loader restores only variables it can reach this way)
and the tokenizer's resources.

Examples are a dict {input name: list of str}, the names of `inputs`.
"""

import contextlib

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"


class UnsupportedExport(ValueError):
    """A format that cannot carry this model (e.g. TFLite for a GPT)."""


def string_spec(name):
    return tf.TensorSpec([None], tf.string, name=name)


def _ids_spec(name):
    return tf.TensorSpec([None, None], tf.int32, name=name)


BERT_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")
TOKENIZED_SPECS = {name: _ids_spec(name) for name in BERT_INPUTS}


def tf_variables(layer, trainable_only=False):
    """The tf.Variables behind a Keras layer's weights (dropout seed states included)."""
    weights = layer.trainable_weights if trainable_only else layer.variables
    return [w.value for w in weights]


@contextlib.contextmanager
def untracked(module):
    """Attributes set in the block are not tracked by `module` (not saved with it)."""
    module._setattr_tracking = False  # noqa: SLF001 - AutoTrackable's switch for this
    try:
        yield module
    finally:
        module._setattr_tracking = True  # noqa: SLF001


def to_numpy(outputs):
    return {name: np.asarray(value) for name, value in outputs.items()}


class ServingHead(tf.Module):
    """Base class: serves `predict` as `serving_default` over string inputs.

    Subclasses set `inputs` and `main_output` and implement `predict`.

    Args:
        model: the task type's Keras model, with its preprocessing.
    """

    inputs = ("text",)
    main_output = None
    method_names = {}

    def __init__(self, model):
        super().__init__(name=type(self).__name__.lower())
        if model.tokenizer is None:
            raise ValueError(
                f"this {type(model).__name__} has no tokenizer, so it cannot take raw text: load it with "
                "from_pretrained(...) or build it with its preprocessor"
            )
        self.model_variables = tf_variables(model)
        # The model itself stays untracked: its Keras variables would save
        # every weight a second time beside `model_variables`.
        with untracked(self):
            self.model = model

    def predict(self, **inputs):
        """In-graph outputs for raw string inputs (tf.string [batch] each)."""
        raise NotImplementedError

    def signatures(self):
        """{signature name: concrete function}; `serving_default` takes `inputs`."""
        specs = [string_spec(name) for name in self.inputs]
        serve = tf.function(lambda *texts: self.predict(**dict(zip(self.inputs, texts))), input_signature=specs)
        return {"serving_default": serve.get_concrete_function()}

    def warmup_inputs(self, examples):
        """{signature name: inputs} with real values, for TF Serving's warmup file."""
        return {"serving_default": {name: np.asarray(examples[name], dtype=object) for name in self.inputs}}

    def report_examples(self, examples):
        """The examples the export report runs (e.g. with a word masked for masked LMs)."""
        return examples

    def reference(self, examples):
        """The Keras model's outputs for `examples` (numpy), as the exports name them."""
        return to_numpy(self.predict(**{name: tf.constant(examples[name], tf.string) for name in self.inputs}))

    def compare(self, reference, outputs):
        """{"max_abs_diff", "agreement"} of an artifact's `main_output` against the reference."""
        expected, actual = np.asarray(reference[self.main_output]), np.asarray(outputs[self.main_output])
        if actual.shape != expected.shape:
            raise ValueError(
                f"{self.main_output}: shape {actual.shape} differs from the Keras model's {expected.shape}"
            )
        diff = float(np.abs(actual - expected).max()) if expected.size else 0.0
        return {"max_abs_diff": diff, "agreement": None}

    def describe(self):
        """What an app needs to know besides inputs and outputs (JSON-ready; TFLite metadata)."""
        return {}

    def tflite_function(self, flavour, seq_length=None):
        """What a TFLite file of this type computes, for `tfplm.export.lite.convert`.

        Args:
            flavour: "ids" (token ids in) or "text" (strings in).
            seq_length: the static sequence length; None for the model's own.

        Returns:
            (a `tf.function` with one batch-1 input signature, the seq_length it uses).

        Raises:
            UnsupportedExport: the task type has no TFLite form.
        """
        raise UnsupportedExport(
            f"TFLite export does not cover a {type(self.model).__name__} ({type(self).__name__} has no "
            "TFLite function); export a SavedModel"
        )


def pack_single(segments, seq_length, cls_token_id, sep_token_id, pad_token_id=0):
    """BERT's `[CLS] A [SEP] (B [SEP])` packing for a batch of one, in ops TFLite can run.

    `tokenizers.pack_segments` combines segments with
    `tensorflow_text.combine_segments`, whose ragged concatenation lowers to
    `RaggedGather`: neither a TFLite builtin nor one of tensorflow_text's
    TFLite ops. With one row the ragged values are the row, so the same
    packing is a dense concatenation; trimming is the same
    `RoundRobinTrimmer`. Tests check it equals `pack_segments`.

    Args:
        segments: one or two int32 RaggedTensors [1, None].
        seq_length: length of the packed row.
        cls_token_id, sep_token_id, pad_token_id: the special ids.

    Returns:
        dict of int32 [1, seq_length]: `input_word_ids`, `input_mask`, `input_type_ids`.
    """
    trimmed = tf_text.RoundRobinTrimmer(max_seq_length=seq_length - 1 - len(segments)).trim(segments)
    ids, type_ids = [tf.constant([cls_token_id], tf.int32)], [tf.constant([0], tf.int32)]
    for index, segment in enumerate(trimmed):
        tokens = tf.cast(segment.flat_values, tf.int32)
        ids += [tokens, tf.constant([sep_token_id], tf.int32)]
        type_ids += [tf.fill(tf.shape(tokens), index), tf.constant([index], tf.int32)]
    ids = tf.concat(ids, 0)
    padding = [[0, seq_length - tf.shape(ids)[0]]]

    def pad(values, value=0):
        return tf.reshape(tf.pad(values, padding, constant_values=value), [1, seq_length])

    return {
        "input_word_ids": pad(ids, pad_token_id),
        "input_mask": pad(tf.ones_like(ids)),
        "input_type_ids": pad(tf.concat(type_ids, 0)),
    }


class BertTextHead(ServingHead):
    """What BERT-encoder task types share: raw text (or pairs) packed in-graph by
    the model's `BertPreprocessor`, plus `serve_tokenized` (ids in) and
    `serve_examples` (serialized tf.Examples with features named like
    `inputs`, for TF Serving's Classify/Regress APIs).

    Subclasses implement `outputs(packed)` (and `tflite_outputs` when some
    outputs are strings).
    """

    # Rows the model runs on at once inside a signature: a request's memory is
    # bounded by this many rows, not by its batch size (see `_in_chunks`).
    chunk_size = 64

    def __init__(self, model):
        super().__init__(model)
        self.preprocessor = model.preprocessor
        self.inputs = ("text", "text_b") if self.preprocessor.pair else ("text",)

    def outputs(self, packed):
        """Outputs for packed encoder inputs (dict of int32 [batch, seq])."""
        raise NotImplementedError

    def describe(self):
        return {"pair": bool(self.preprocessor.pair)}

    def examples_outputs(self, outputs):
        """`serve_examples`' outputs (TF Serving's Classify/Regress names where it has them)."""
        return outputs

    def tflite_outputs(self, packed):
        """The float outputs TFLite files carry."""
        return self.outputs(packed)

    def _tokenized(self, inputs):
        return self._in_chunks({name: tf.cast(inputs[name], tf.int32) for name in BERT_INPUTS})

    def _in_chunks(self, packed):
        """`outputs(packed)`, run on `chunk_size` rows at a time and concatenated.

        A request of 10,000 texts would otherwise hold the attention scores of
        all of them at once (+6 GB for a bert_tiny at length 128); in chunks
        the memory is that of `chunk_size` rows whatever the batch, and each
        row's outputs are the same (rows never see each other).
        """
        size = self.chunk_size
        rows, length = tf.unstack(tf.shape(packed["input_word_ids"]))
        # An empty request packs to length 0; one padding column lets the model run on its zero rows.
        packed = {name: tf.pad(value, [[0, 0], [0, tf.maximum(1 - length, 0)]]) for name, value in packed.items()}

        def chunk(index):
            return self.outputs({name: value[index * size : (index + 1) * size] for name, value in packed.items()})

        first = chunk(0)
        arrays = {
            name: tf.TensorArray(value.dtype, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, *value.shape[1:]])
            .write(0, value)
            for name, value in first.items()
        }

        def body(index, arrays):
            outputs = chunk(index)
            return index + 1, {name: array.write(index, outputs[name]) for name, array in arrays.items()}

        _, arrays = tf.while_loop(lambda index, _: index * size < rows, body, (tf.constant(1), arrays))
        return {name: array.concat() for name, array in arrays.items()}

    def predict(self, **inputs):
        # Padded to the request's longest text, not seq_length: the outputs
        # are the same, and short texts cost only their own length.
        segments = tuple(inputs[name] for name in self.inputs)
        text = segments if self.preprocessor.pair else segments[0]
        return self._tokenized(self.preprocessor(text, pad_to_longest=True))

    def signatures(self):
        signatures = super().signatures()
        serve_tokenized = tf.function(self._tokenized, input_signature=[TOKENIZED_SPECS])
        feature_spec = {name: tf.io.FixedLenFeature([], tf.string) for name in self.inputs}

        @tf.function(input_signature=[string_spec("inputs")])
        def serve_examples(serialized):
            features = tf.io.parse_example(serialized, feature_spec)
            return self.examples_outputs(self.predict(**features))

        signatures["serve_tokenized"] = serve_tokenized.get_concrete_function()
        signatures["serve_examples"] = serve_examples.get_concrete_function()
        return signatures

    def warmup_inputs(self, examples):
        inputs = super().warmup_inputs(examples)
        text = inputs["serving_default"]
        segments = tuple(tf.constant(text[name], tf.string) for name in self.inputs)
        packed = self.preprocessor(segments if self.preprocessor.pair else segments[0])
        records = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(text[name][i]).encode()]))
                        for name in self.inputs
                    }
                )
            ).SerializeToString()
            for i in range(len(text["text"]))
        ]
        inputs["serve_tokenized"] = {name: packed[name].numpy() for name in BERT_INPUTS}
        inputs["serve_examples"] = {"inputs": np.array(records, dtype=object)}
        return inputs

    def tflite_function(self, flavour, seq_length=None):
        """"ids": int32 [1, seq_length] inputs, builtin ops only; "text": strings in,
        tokenized by tensorflow_text's TFLite ops (`WordPieceTokenizer.tokenize_tflite`).
        seq_length defaults to the preprocessor's."""
        seq_length = seq_length or self.preprocessor.seq_length
        minimum = 1 + len(self.inputs)  # [CLS] and one [SEP] per segment
        if not minimum <= seq_length <= self.model.max_length:
            raise ValueError(
                f"seq_length={seq_length}; expected {minimum} to {self.model.max_length} (the encoder's max_length)"
            )
        if flavour == "ids":
            spec = {name: tf.TensorSpec([1, seq_length], tf.int32, name=name) for name in BERT_INPUTS}
            return tf.function(self.tflite_outputs, input_signature=[spec]), seq_length
        tokenizer = self.model.tokenizer

        def serve_text(*texts):
            segments = [tokenizer.tokenize_tflite(text) for text in texts]
            ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
            return self.tflite_outputs(pack_single(segments, seq_length, *ids))

        specs = [tf.TensorSpec([1], tf.string, name=name) for name in self.inputs]
        return tf.function(serve_text, input_signature=specs), seq_length
