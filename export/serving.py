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

Any batch size is accepted and memory stays bounded: the BERT heads run the
model on `BertTextHead.chunk_size` (64) rows at a time inside the signature
and concatenate (10,000 texts to a bert_tiny classifier at length 128: +6 GB
in one piece, +0.3 GB in chunks; the outputs are the same).

The version is written to a hidden temporary folder and renamed into place
(`tfplm.publish`), so a watching server never sees half a model; one export
at a time writes to an export folder (`export_lock`);
`assets.extra/tf_serving_warmup_requests` holds one real request per
signature. Loading needs only TensorFlow and tensorflow_text (whose import
registers the tokenizer ops): see `tfplm.export.load`.
"""

import contextlib
import os

import tensorflow as tf
from absl import logging

from tfplm import locking, publish, tasks
from tfplm.tasks.serving import CLASSIFY_METHOD, PREDICT_METHOD

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
LOCK_FILE = ".export.lock"


@contextlib.contextmanager
def export_lock(export_dir, model_name, folders=()):
    """Holds `export_dir` for one export (`tfplm.locking`; another export there
    is refused with a line naming this one) and, holding it, removes what
    killed exports left in `folders` (hidden `tfplm.publish` temporaries)."""
    with locking.writer_lock(
        export_dir,
        LOCK_FILE,
        activity=f"an export of {model_name}",
        fix="wait for it to finish or export to another folder",
    ):
        for folder in folders:
            removed = publish.remove_temporaries(folder)
            if removed:
                logging.warning("removed what a killed export left in %s: %s", folder, ", ".join(removed))
        yield


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


def write_saved_model(model, directory, *, model_name=None, warmup_examples=None):
    """Writes `model`'s SavedModel (signatures, TF Serving method names, warmup
    requests) into `directory`, a new or empty folder; returns `directory`.

    Nothing here is atomic: `saved_model` and `tfplm.export.export_model`
    write into a hidden temporary folder and rename it when it is complete
    (and, for `export_model`, checked).
    """
    head = tasks.serving_head(model)
    model_name = model_name or default_model_name(model)
    examples = warmup_examples or {name: ["a gorgeous, witty, seductive [MASK] movie.", ""] for name in head.inputs}
    signatures = head.signatures()
    tf.saved_model.save(head, directory, signatures=signatures)
    if head.method_names:
        _set_method_names(directory, head.method_names)
    os.makedirs(os.path.join(directory, "assets.extra"), exist_ok=True)
    inputs = head.warmup_inputs({name: list(examples[name][:2]) for name in head.inputs})
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILE)) as writer:
        for record in _warmup_records(model_name, signatures, head.method_names, inputs):
            writer.write(record.SerializeToString())
    logging.info("exported %s (%s) to %s", type(model).__name__, ", ".join(signatures), directory)
    return directory


def saved_model(model, export_dir, *, model_name=None, version=None, warmup_examples=None):
    """Exports `model` as `export_dir/model_name/version/` for TF Serving.

    The version folder is written under a hidden temporary name and renamed
    when complete (`tfplm.publish`); while it is written, `export_dir` is
    locked against other exports (`export_lock`), and hidden leftovers
    of killed exports in `export_dir/model_name` are removed first. It is not
    checked against the Keras model: `tfplm.export.export_model` publishes a
    version only after its report passes.

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
    tasks.serving_head(model)  # a model that cannot be served is refused before anything is written
    model_name = model_name or default_model_name(model)
    export_dir = os.path.abspath(os.fspath(export_dir))
    base = os.path.join(export_dir, model_name)
    with export_lock(export_dir, model_name, folders=[base]):
        version = next_version(base) if version is None else int(version)
        final = os.path.join(base, str(version))
        if os.path.lexists(final):
            raise ValueError(f"{final} exists; TF Serving may be serving it. Choose another version or omit it")
        with publish.directory(final) as tmp:
            write_saved_model(model, tmp, model_name=model_name, warmup_examples=warmup_examples)
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
