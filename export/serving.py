"""SavedModels for TF Serving that take raw text: tokenization runs in the graph.

`saved_model(model, export_dir)` writes `export_dir/NAME/VERSION/`, the layout
TF Serving watches, with these signatures:

* `serving_default`: `text` (tf.string [batch]), plus `text_b` for sentence
  pairs, tokenized and packed in-graph by the model's own `BertPreprocessor`.
  Outputs by model: a classifier gives `probabilities` [batch, classes],
  `label_id` and `label` (the label strings); a regressor `score`; an encoder
  `pooled_output` and `sequence_output`; a `BertPretrainer` the `top_k`
  predictions for every `[MASK]` in the text (`top_k_ids`, `top_k_tokens`,
  `top_k_probabilities`, with `masked_positions`, -1 where a row has fewer).
* `serve_tokenized`: `input_word_ids`, `input_mask`, `input_type_ids` (int32
  [batch, seq]), the same outputs.
* `serve_examples`: serialized `tf.Example`s (`inputs`, features `text` and
  `text_b`) for TF Serving's Classify API (method `tensorflow/serving/classify`,
  outputs `classes` and `scores`) or Regress API (`tensorflow/serving/regress`,
  output `outputs`); encoders and masked LMs keep the predict method.
* GPT: `generate` (also `serving_default`): `prompt` strings, `max_new_tokens`,
  `sampler` ("greedy", "top_k" or "top_p"), `temperature`, `top_k`, `top_p`,
  `seed`; the cached decoding loop runs in-graph. Outputs `text` (prompt and
  continuation) and `token_ids`.

The version is written to a temporary directory and renamed into place, so a
watching server never sees half a model; `assets.extra/tf_serving_warmup_requests`
holds one real request per signature. The tokenizer's files (vocab.txt, or
vocab.json + merges.txt, or spm.model) ship in `assets/`.

Loading needs only TensorFlow and tensorflow_text (whose import registers the
tokenizer ops): see `tfplm.export.load`.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from tfplm import generation

from tfplm.models import GPT, BertClassifier, BertEncoder, BertPretrainer
from tfplm.tokenizers import BertPreprocessor

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SAMPLERS = ("greedy", "top_k", "top_p")
_WARMUP_TEXTS = ("a gorgeous, witty, seductive [MASK] movie.", "")


def model_kind(model):
    """"classifier", "regressor", "encoder", "masked_lm" or "generator"; a clear error otherwise."""
    if isinstance(model, BertClassifier):
        return "regressor" if model.num_classes == 1 else "classifier"
    if isinstance(model, BertEncoder):
        return "encoder"
    if isinstance(model, BertPretrainer):
        return "masked_lm"
    if isinstance(model, GPT):
        return "generator"
    raise ValueError(
        f"cannot export a {type(model).__name__}; expected BertClassifier, BertEncoder, BertPretrainer or GPT"
    )


def tf_variables(layer, trainable_only=False):
    """The tf.Variables behind a Keras layer's weights.

    Tracked by the serving module itself: TF Serving's session-based loader
    (and `saved_model_cli run`) restores only variables it can reach this way.
    """
    # `variables` also holds the dropout layers' seed-generator states.
    weights = layer.trainable_weights if trainable_only else layer.variables
    return [w.value for w in weights]


def _string_spec(name):
    return tf.TensorSpec([None], tf.string, name=name)


def _ids_spec(name):
    return tf.TensorSpec([None, None], tf.int32, name=name)


TOKENIZED_SPECS = {name: _ids_spec(name) for name in ("input_word_ids", "input_mask", "input_type_ids")}


class BertServing(tf.Module):
    """The serving functions of a BERT model with its preprocessor.

    Args:
        model: a `BertClassifier`, `BertEncoder` or `BertPretrainer`.
        preprocessor: the `BertPreprocessor` the model was trained with.
        vocab_file: the vocabulary file; ships as an asset (and gives
            `top_k_tokens` their strings).
        label_names: class names for `label` (classifiers); default "0", "1", ...
        pair: the model reads sentence pairs (`text_b` input).
        top_k: predictions per `[MASK]` (masked LMs).
    """

    def __init__(self, model, preprocessor, vocab_file, label_names=None, pair=False, top_k=5):
        super().__init__(name="bert_serving")
        self.kind = model_kind(model)
        self.model = model
        self.model_variables = tf_variables(model)
        self.preprocessor = preprocessor
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.pair = pair
        self.top_k = top_k
        if self.kind == "classifier":
            names = list(label_names) if label_names else [str(i) for i in range(model.num_classes)]
            if len(names) != model.num_classes:
                raise ValueError(f"{len(names)} label names for a {model.num_classes}-class classifier")
            self.label_names = tf.constant(names)
        if self.kind == "masked_lm":
            self.mask_token_id = preprocessor.tokenizer.mask_token_id
            self.id_to_token = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    self.vocab_file,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                ),
                default_value="",
            )

    def predict_tokenized(self, inputs):
        """The outputs of the model's kind for packed inputs (dict of int32 [batch, seq])."""
        inputs = {k: tf.cast(inputs[k], tf.int32) for k in TOKENIZED_SPECS}
        if self.kind == "classifier":
            probabilities = tf.nn.softmax(self.model(inputs, training=False), axis=-1)
            label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            return {
                "probabilities": probabilities,
                "label_id": label_id,
                "label": tf.gather(self.label_names, label_id),
            }
        if self.kind == "regressor":
            return {"score": self.model(inputs, training=False)[:, 0]}
        if self.kind == "encoder":
            outputs = self.model(inputs, training=False)
            return {k: outputs[k] for k in ("pooled_output", "sequence_output")}
        return self._masked_lm(inputs)

    def _masked_lm(self, inputs):
        ids = inputs["input_word_ids"]
        is_mask = tf.equal(ids, self.mask_token_id)
        positions = tf.ragged.boolean_mask(tf.broadcast_to(tf.range(tf.shape(ids)[1]), tf.shape(ids)), is_mask)
        valid = tf.ones_like(positions, tf.bool).to_tensor(False)
        # Rows with fewer masks gather position 0 ([CLS]) and are blanked out below.
        logits = self.model({**inputs, "masked_lm_positions": positions.to_tensor(0)}, training=False)["mlm_logits"]
        probabilities, top_ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.top_k)
        valid_k = tf.broadcast_to(valid[:, :, None], tf.shape(top_ids))
        top_ids = tf.where(valid_k, top_ids, -1)
        return {
            "top_k_ids": top_ids,
            "top_k_tokens": tf.where(valid_k, self.id_to_token.lookup(tf.cast(top_ids, tf.int64)), ""),
            "top_k_probabilities": tf.where(valid_k, probabilities, 0.0),
            "masked_positions": positions.to_tensor(-1),
        }

    def predict_text(self, text, text_b=None):
        """Outputs for raw text (and the pair's second texts)."""
        segments = (text,) if text_b is None else (text, text_b)
        return self.predict_tokenized(self.preprocessor(segments))

    def signatures(self):
        """{signature name: concrete function}, and {name: method name} where not predict."""
        text_names = ("text", "text_b") if self.pair else ("text",)

        @tf.function(input_signature=[_string_spec(n) for n in text_names])
        def serve_text(*texts):
            return self.predict_text(*texts)

        @tf.function(input_signature=[TOKENIZED_SPECS])
        def serve_tokenized(inputs):
            return self.predict_tokenized(inputs)

        feature_spec = {name: tf.io.FixedLenFeature([], tf.string) for name in text_names}

        @tf.function(input_signature=[_string_spec("inputs")])
        def serve_examples(inputs):
            features = tf.io.parse_example(inputs, feature_spec)
            outputs = self.predict_text(*(features[n] for n in text_names))
            if self.kind == "classifier":
                classes = tf.broadcast_to(self.label_names, tf.shape(outputs["probabilities"]))
                return {"classes": classes, "scores": outputs["probabilities"]}
            if self.kind == "regressor":
                return {"outputs": outputs["score"]}
            return outputs

        methods = {"classifier": CLASSIFY_METHOD, "regressor": REGRESS_METHOD}
        signatures = {
            "serving_default": serve_text.get_concrete_function(),
            "serve_tokenized": serve_tokenized.get_concrete_function(),
            "serve_examples": serve_examples.get_concrete_function(),
        }
        return signatures, ({"serve_examples": methods[self.kind]} if self.kind in methods else {})

    def warmup_inputs(self, texts):
        """{signature name: inputs} with real values, for the warmup file."""
        texts = np.asarray(texts, dtype=object)
        text_inputs = {"text": texts, **({"text_b": texts[::-1]} if self.pair else {})}
        tokenized = self.preprocessor(tuple(tf.constant(v) for v in text_inputs.values()))
        examples = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v[i].encode()])) for k, v in text_inputs.items()}
                )
            )
            for i in range(len(texts))
        ]
        return {
            "serving_default": text_inputs,
            "serve_tokenized": {k: v.numpy() for k, v in tokenized.items()},
            "serve_examples": {"inputs": np.array([e.SerializeToString() for e in examples], dtype=object)},
        }


class GptServing(tf.Module):
    """The `generate` function of a GPT with its tokenizer, in-graph.

    Prompts longer than `max_length - max_new_tokens` tokens keep their last
    tokens; an empty prompt starts from the end-of-text token (as
    `GPT.generate`).
    """

    def __init__(self, model, tokenizer, vocabulary_files):
        super().__init__(name="gpt_serving")
        self.model = model
        self.model_variables = tf_variables(model)
        self.tokenizer = tokenizer
        self.vocabulary_files = [tf.saved_model.Asset(path) for path in vocabulary_files]

    def generate(self, prompt, max_new_tokens, sampler, temperature, top_k, top_p, seed):
        end = self.tokenizer.end_token_id
        max_length = self.model.max_length
        max_new_tokens = tf.clip_by_value(max_new_tokens, 1, max_length - 1)
        ids = tf.cast(self.tokenizer.tokenize(prompt), tf.int32)
        lengths = ids.row_lengths()
        start_token = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(lengths == 0, tf.int32))], end), tf.cast(lengths == 0, tf.int64)
        )
        ids = tf.concat([ids, start_token], axis=1)
        keep = tf.cast(max_length - max_new_tokens, tf.int64)
        ids = _last(ids, keep)
        total = tf.cast(tf.reduce_max(ids.row_lengths()), tf.int32) + max_new_tokens
        batch = ids.nrows(out_type=tf.int32)
        token_ids = ids.to_tensor(default_value=end, shape=[batch, total])
        prompt_mask = tf.ones_like(ids, tf.bool).to_tensor(False, shape=[batch, total])
        temperature = tf.maximum(temperature, 1e-6)
        vocab = self.model.vocab_size
        samplers = [
            generation.GreedySampler(),
            generation.TopKSampler(k=tf.clip_by_value(top_k, 1, vocab), temperature=temperature),
            generation.TopPSampler(p=tf.clip_by_value(top_p, 1e-6, 1.0), temperature=temperature),
        ]
        index = tf.argmax(tf.cast(tf.equal(sampler, SAMPLERS), tf.int32), output_type=tf.int32)
        known = tf.debugging.Assert(
            tf.reduce_any(tf.equal(sampler, SAMPLERS)), ["sampler must be one of", SAMPLERS, "got", sampler]
        )

        def run(s):
            def branch():
                cache = self.model.empty_cache(batch, total)
                return generation.decode(
                    self.model.next_logits, token_ids, prompt_mask, cache, s,
                    stop_token_id=end, pad_token_id=end, seed=seed,
                )

            return branch

        with tf.control_dependencies([known]):
            out = tf.switch_case(index, [run(s) for s in samplers])
        kept = tf.ragged.boolean_mask(out, tf.not_equal(out, end))
        text = self.tokenizer.detokenize(kept)
        # Byte-level BPE may stop inside a character: repair like errors="replace".
        return {"text": tf_text.coerce_to_structurally_valid_utf8(text), "token_ids": out}

    def signatures(self):
        specs = [
            _string_spec("prompt"),
            tf.TensorSpec([], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([], tf.string, name="sampler"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int32, name="seed"),
        ]
        generate = tf.function(self.generate, input_signature=specs).get_concrete_function()
        return {"serving_default": generate, "generate": generate}, {}

    def warmup_inputs(self, texts):
        inputs = {
            "prompt": np.asarray(texts, dtype=object),
            "max_new_tokens": np.int32(4),
            "sampler": np.asarray("greedy", dtype=object),
            "temperature": np.float32(1.0),
            "top_k": np.int32(10),
            "top_p": np.float32(0.9),
            "seed": np.int32(0),
        }
        return {"serving_default": inputs, "generate": inputs}


def _last(ids, keep):
    """The last `keep` values of each row of a ragged [batch, None] tensor."""
    lengths = ids.row_lengths()
    start = tf.maximum(lengths - keep, 0)
    positions = tf.ragged.range(start, lengths)
    return tf.gather(ids, positions, batch_dims=1)


def serving_module(model, vocabulary_dir, label_names=None, pair=False, top_k=5):
    """The `tf.Module` whose signatures serve `model`; its tokenizer files go to `vocabulary_dir`."""
    kind = model_kind(model)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            f"this {type(model).__name__} has no tokenizer, so it cannot take raw text: load it with "
            "from_pretrained(...) or set `model.tokenizer` (and `model.preprocessor` for BERT)"
        )
    files = tokenizer.save_vocabulary(vocabulary_dir)
    if kind == "generator":
        return GptServing(model, tokenizer, files)
    preprocessor = getattr(model, "preprocessor", None) or BertPreprocessor(tokenizer)
    return BertServing(model, preprocessor, files[0], label_names=label_names, pair=pair, top_k=top_k)


def _set_method_names(directory, methods):
    """TF 2 saves every signature as predict; TF Serving's Classify/Regress APIs need theirs."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(directory, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    for name, method in methods.items():
        proto.meta_graphs[0].signature_def[name].method_name = method
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def _warmup_records(model_name, signatures, methods, inputs):
    """One PredictionLog per signature: a Predict, Classify or Regress request."""
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    for name in signatures:
        spec = model_pb2.ModelSpec(name=model_name, signature_name=name)
        method = methods.get(name, PREDICT_METHOD)
        if method == PREDICT_METHOD:
            request = predict_pb2.PredictRequest(model_spec=spec)
            for key, value in inputs[name].items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            yield prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            continue
        request_class = classification_pb2.ClassificationRequest if method == CLASSIFY_METHOD else regression_pb2.RegressionRequest
        request = request_class(model_spec=spec)
        request.input.example_list.examples.extend(tf.train.Example.FromString(e) for e in inputs[name]["inputs"])
        if method == CLASSIFY_METHOD:
            log = prediction_log_pb2.ClassifyLog(request=request)
            yield prediction_log_pb2.PredictionLog(classify_log=log)
        else:
            yield prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))


def next_version(model_dir):
    """1 + the largest numeric version folder in `model_dir` (1 when there is none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def saved_model(model, export_dir, *, model_name=None, version=None, label_names=None, pair=False, top_k=5, warmup_texts=None):
    """Exports `model` as `export_dir/model_name/version/` for TF Serving.

    Args:
        model: a `BertClassifier`, `BertEncoder`, `BertPretrainer` (with
            `preprocessor` and `tokenizer`, as `from_pretrained` or the tasks
            build them) or a `GPT` with its `tokenizer`.
        export_dir: the model base path TF Serving watches (its parent).
        model_name: the folder (and the warmup requests' model name); default
            the class name in snake case.
        version: an integer version; default one above the newest there.
            An existing version is never overwritten.
        label_names: class names for classifiers' `label` output; default
            `model.label_names` if set, else "0", "1", ...
        pair: BERT classifiers / regressors of sentence pairs take `text_b` too.
        top_k: predictions per `[MASK]` for a `BertPretrainer`.
        warmup_texts: texts for the warmup requests (default two examples).

    Returns:
        The path of the version directory.

    Example:
    >>> path = saved_model(classifier, "serving", model_name="sst2")  # doctest: +SKIP
    >>> loaded = tfplm.export.load(path)  # doctest: +SKIP
    >>> loaded.signatures["serving_default"](text=tf.constant(["a fine film"]))["label"]  # doctest: +SKIP
    """
    kind = model_kind(model)
    if pair and kind not in ("classifier", "regressor"):
        raise ValueError(f"pair=True is for sentence-pair classifiers/regressors, not a {type(model).__name__}")
    model_name = model_name or default_model_name(model)
    base = os.path.join(os.path.abspath(os.fspath(export_dir)), model_name)
    version = next_version(base) if version is None else int(version)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise ValueError(f"{final} exists; TF Serving may be serving it. Choose another version or omit it")
    os.makedirs(base, exist_ok=True)
    label_names = label_names if label_names is not None else getattr(model, "label_names", None)
    # TF Serving ignores folders whose names are not numbers, so it never sees this one.
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base)
    try:
        with tempfile.TemporaryDirectory() as vocabulary_dir:
            module = serving_module(model, vocabulary_dir, label_names=label_names, pair=pair, top_k=top_k)
            signatures, methods = module.signatures()
            tf.saved_model.save(module, tmp, signatures=signatures)
        if methods:
            _set_method_names(tmp, methods)
        os.makedirs(os.path.join(tmp, "assets.extra"))
        inputs = module.warmup_inputs(list(warmup_texts or _WARMUP_TEXTS))
        with tf.io.TFRecordWriter(os.path.join(tmp, WARMUP_FILE)) as writer:
            for record in _warmup_records(model_name, signatures, methods, inputs):
                writer.write(record.SerializeToString())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("exported %s (%s) to %s", type(model).__name__, ", ".join(signatures), final)
    return final


def default_model_name(model):
    """The class name in snake case: "bert_classifier", "gpt", ..."""
    name = type(model).__name__
    return "".join("_" + c.lower() if c.isupper() and 0 < i and not name[i - 1].isupper() else c.lower() for i, c in enumerate(name))


def load(path):
    """Loads an exported SavedModel with tensorflow_text's ops registered.

    `tf.saved_model.load` alone fails on these models with "Op type not
    registered" unless `import tensorflow_text` ran first; this says so.
    """
    try:
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
    except ImportError as error:
        raise ImportError(
            "tfplm's SavedModels tokenize text in-graph with tensorflow_text ops: "
            "`pip install tensorflow-text` (the version matching TensorFlow's) and "
            "`import tensorflow_text` before tf.saved_model.load"
        ) from error
    return tf.saved_model.load(path)
