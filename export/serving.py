"""SavedModels for TF Serving that take raw text: tokenization runs in the graph.

`saved_model(model, export_dir)` writes `export_dir/NAME/VERSION/`, the layout
TF Serving watches. What the signatures take and return is the model's task
type's serving head (`tfplm.tasks.serving_head`); for the zoo's task types:

* classifiers (`BertClassifier`): `serving_default` takes `text` (and
  `text_b` for sentence pairs) and returns `probabilities`, `label_id` and
  `label` (or `score` for a regressor); `serve_tokenized` takes
  `input_word_ids`, `input_mask`, `input_type_ids`; `serve_examples` takes
  serialized `tf.Example`s for TF Serving's Classify / Regress APIs;
* encoders (`BertEncoder`): `pooled_output` and `sequence_output`;
* masked LMs (`BertPretrainer`): the `top_k` predictions for every `[MASK]`;
* generators (`GPT`): `serving_default` takes `prompt` alone; `generate`
  takes the decoding inputs too (sampler, max_new_tokens, ...).

The version is written to a hidden temporary folder and renamed into place
(`tfplm.publish`), so a watching server never sees half a model;
`assets.extra/tf_serving_warmup_requests` holds one real request per
signature. Loading needs only TensorFlow and tensorflow_text (whose import
registers the tokenizer ops): see `tfplm.export.load`.
"""

import os

import tensorflow as tf
from absl import logging

from tfplm import publish, tasks
from tfplm.tasks.serving import CLASSIFY_METHOD, PREDICT_METHOD

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


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
        request_class = (
            classification_pb2.ClassificationRequest if method == CLASSIFY_METHOD else regression_pb2.RegressionRequest
        )
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


def saved_model(model, export_dir, *, model_name=None, version=None, warmup_examples=None):
    """Exports `model` as `export_dir/model_name/version/` for TF Serving.

    Args:
        model: a zoo model with its preprocessing (as `from_pretrained` and
            the tasks build them), of any registered task type.
        export_dir: the model base path TF Serving watches (its parent).
        model_name: the folder (and the warmup requests' model name); default
            the class name in snake case.
        version: an integer version; default one above the newest there.
            An existing version is never overwritten.
        warmup_examples: {input name: [str]} for the warmup requests
            (default: two short texts).

    Returns:
        The path of the version directory.

    Example:
    >>> path = saved_model(classifier, "serving", model_name="sst2")  # doctest: +SKIP
    >>> loaded = tfplm.export.load(path)  # doctest: +SKIP
    >>> loaded.signatures["serving_default"](text=tf.constant(["a fine film"]))["label"]  # doctest: +SKIP
    """
    head = tasks.serving_head(model)
    model_name = model_name or default_model_name(model)
    base = os.path.join(os.path.abspath(os.fspath(export_dir)), model_name)
    version = next_version(base) if version is None else int(version)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise ValueError(f"{final} exists; TF Serving may be serving it. Choose another version or omit it")
    examples = warmup_examples or {name: ["a gorgeous, witty, seductive [MASK] movie.", ""] for name in head.inputs}
    signatures = head.signatures()
    with publish.directory(final) as tmp:
        tf.saved_model.save(head, tmp, signatures=signatures)
        if head.method_names:
            _set_method_names(tmp, head.method_names)
        os.makedirs(os.path.join(tmp, "assets.extra"))
        inputs = head.warmup_inputs({name: list(examples[name][:2]) for name in head.inputs})
        with tf.io.TFRecordWriter(os.path.join(tmp, WARMUP_FILE)) as writer:
            for record in _warmup_records(model_name, signatures, head.method_names, inputs):
                writer.write(record.SerializeToString())
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
