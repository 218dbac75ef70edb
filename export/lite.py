"""TFLite export of BERT classifiers and encoders, and a runner for the files.

What the file computes is the model's serving head's `tflite_function`
(`tfplm.tasks.serving`); a task type without one cannot be exported here.

`convert(model, "out/model.tflite", flavour=..., quantize=...)` writes one
`.tflite` file with one signature, `serving_default`
(`interpreter.get_signature_runner("serving_default")`), in one of two flavours:

* "ids": inputs `input_word_ids`, `input_mask`, `input_type_ids`, int32
  [1, seq_length]. Only TFLite builtin ops, so the file runs on a stock LiteRT
  interpreter (Android, iOS, `ai_edge_litert.interpreter.Interpreter`) with
  no custom ops and no Flex delegate. The app tokenizes: `vocab.txt` and
  `<name>.json` beside the file say how (casing, special-token ids, packing,
  seq_length, label names, input and output names).
* "text": input `text` (tf.string [1]) and, for sentence-pair models, `text_b`. The
  model's own tokenizer runs inside (`WordPieceTokenizer.tokenize_tflite`)
  as tensorflow_text's TFLite custom ops `FastBertNormalize`,
  `FastWordpieceTokenizeWithOffsets` and `TFText>RoundRobinTrim`; everything
  else is builtin (no Flex). Register the custom ops with
  `tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`:

      import tensorflow_text as tf_text
      from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
      interpreter = InterpreterWithCustomOps(
          model_path="out/model.tflite",
          custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
      runner = interpreter.get_signature_runner("serving_default")
      runner(text=np.array(["a gorgeous, witty film"], dtype=object))

  (`ai_edge_litert.interpreter.InterpreterWithCustomOps` accepts the same
  registrars.) A mobile app links tensorflow_text's TFLite kernels into its
  LiteRT runtime and registers them the same way (the C++ functions behind
  `AddFastBertNormalize`, `AddFastWordpieceTokenize`, `AddRoundRobinTrim`).
  Its tokenization equals the Keras model's except on the inputs listed in
  `WordPieceTokenizer.tokenize_tflite`: tensorflow_text's TFLite kernels
  normalize as its BertTokenizer does (NFKC case folding, so "ﬁ", "１", "𝐀",
  "ǅ", "…" become "fi", "1", "a", "dz", "..."; control characters and invalid
  bytes become word breaks or [UNK]; "[SEP]" typed as text is three pieces),
  while the Keras model normalizes as BERT's reference tokenizer (lower-case,
  NFD, accents stripped; control characters and invalid bytes deleted; special
  tokens matched). The model part is exact, so outputs differ only where the
  ids do: on 728 of the 1,023 strings of tests/hostile/strings.py, and on 44 to
  55 of 184,457 lines of real text. The "ids" flavour equals the Keras model on
  every one of them: use it where inputs are hostile.

Outputs: a classifier gives `probabilities` [1, classes] (softmax of the
logits), a regressor (`num_classes=1`) `score` [1], an encoder
`pooled_output` [1, hidden] and `sequence_output` [1, seq_length, hidden], all
float32.

Quantization (`QUANTIZATIONS`): "none" (float32), "float16" (float16 weights,
float32 compute), "dynamic_int8" (int8 weights, activations quantized on the
fly) and "int8" (int8 weights and embeddings; the attention value projections
run int8 x int8 on activation ranges calibrated on `representative_texts`, the
other matmuls quantize their inputs on the fly; attention scores, softmax,
LayerNorm, GELU and residual adds stay float32: see `_INT8_OP_TYPES`).
Inputs stay int32 ids (or strings) and outputs float32 in every case. Full
integer int8 (every activation int8) is not offered: on BERT models it loses
labels (a fine-tuned MiniLM on the 872 SST-2 dev sentences: 71% label agreement
with float32; "int8" as above 99.5%, "dynamic_int8" 99.2%; both at a quarter
of the float32 size and several times its speed, tools/benchmark_tflite.py).

`TFLiteModel(path)` runs a file on a batch of texts and returns numpy arrays.
"""

import json
import os
import re
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from tfplm import publish, tasks
from tfplm.models.checkpoints.common import inside
from tfplm.tasks.serving import BERT_INPUTS as ID_INPUTS
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
FLAVOURS = ("ids", "text")
SIGNATURE_KEY = "serving_default"
OP_RESOLVER = "tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS"
STRING_TYPES = (np.object_, np.bytes_, np.str_)  # how interpreters report tf.string tensors


def _as_segments(text, inputs):
    if len(inputs) == 1:
        return (text,)
    if not (isinstance(text, (tuple, list)) and len(text) == len(inputs)):
        raise ValueError(
            f"this model takes {', '.join(inputs)}: representative_texts must hold ({', '.join(inputs)}) "
            f"tuples, got {text!r:.80}"
        )
    return tuple(text)


def _representative_dataset(inputs, tokenizer, texts, seq_length):
    """Calibration inputs for full-integer quantization: the "ids" signature's, one example at a time."""
    columns = [tf.constant(column, tf.string) for column in zip(*(_as_segments(text, inputs) for text in texts))]
    preprocessor = BertPreprocessor(tokenizer, seq_length=seq_length)
    packed = {name: t.numpy() for name, t in preprocessor(tuple(columns)).items()}
    rows = [{name: packed[name][i : i + 1] for name in ID_INPUTS} for i in range(len(texts))]
    return lambda: iter(rows)


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# Full-integer int8 (every activation calibrated to one int8 scale per tensor)
# loses labels on BERT models: a fine-tuned MiniLM agreed with float32 on 71% of
# the 872 SST-2 dev sentences. TFLite's quantization debugger and per-op-type
# denylists on that model (tools/benchmark_tflite.py; BENCHMARKS.md) found:
# the -1e9 mask fill takes the whole range of the attention scores (int8 with
# attention in float: 90.6%); LayerNorm's variance/rsqrt and the residual
# stream's outlier channels (feed-forward outputs span ±115 while most values
# are ±1) break int8 everywhere after that (only the matmuls in int8: 94.5%;
# with the feed-forward down-projections' activations in float: 98.0%). So
# "int8" keeps int8 where it is cheap in accuracy and carries the size and speed:
# every matmul weight and the embedding tables are int8; the attention value
# projections run int8 x int8 with calibrated activation ranges; the other
# matmuls quantize their inputs per row on the fly (int8 weights, float32
# outputs); attention scores, mask, softmax, LayerNorm, GELU and the residual
# adds stay float32 (a small share of the time). Which matmuls take calibrated
# ranges was measured one projection type at a time on a MiniLM fine-tuned on
# SST-2 (label agreement with float32 on 872 dev plus 3,000 train sentences):
# value 99.46%, none 99.35%, all four attention projections (this file's
# earlier choice) 98.99%, the feed-forward up-projection 98.94%; on the 872 dev
# sentences alone query+key and the attention output 99.20% each, and the
# feed-forward down-projection (the outlier channels above) 94.5%.
_INT8_OP_TYPES = ("FULLY_CONNECTED", "GATHER")  # kept int8 by the quantizer
# FULLY_CONNECTED ops whose output tensor is named like this run on calibrated int8 inputs:
# the attention value projections (`tfplm.layers.attention`), e.g. "…/self_attention_1/value_1/MatMul".
_INT8_STATIC_MATMULS = re.compile(r"attention(_\d+)?/value(_\d+)?/")


def _op_list(content):
    """[(op name, first output tensor name)] of a flatbuffer."""
    interpreter = _custom_op_interpreter(model_content=content)
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [(op["op_name"], tensors.get(op["outputs"][0], "")) for op in interpreter._get_ops_details()]  # noqa: SLF001


def _int8_weights_for_float_matmuls(content):
    """Float FULLY_CONNECTED ops get int8 weights (symmetric, one scale per output
    channel) and quantize their float inputs per row at run time: TFLite's
    dynamic-range ("hybrid") kernels, as in quantize="dynamic_int8". Returns
    (flatbuffer bytes, number of ops changed)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    fully_connected = {
        i
        for i, code in enumerate(model.operatorCodes)
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED
    }
    changed = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.opcodeIndex not in fully_connected or len(op.inputs) < 2:
                continue
            inputs, kernel = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            data = model.buffers[kernel.buffer].data
            if inputs.type != schema.TensorType.FLOAT32 or kernel.type != schema.TensorType.FLOAT32 or data is None:
                continue
            values = np.frombuffer(bytes(data), np.float32).reshape([int(n) for n in kernel.shape])
            scale = np.maximum(np.abs(values).max(axis=1), np.finfo(np.float32).tiny) / 127.0
            quantized = np.clip(np.round(values / scale[:, None]), -127, 127).astype(np.int8)
            model.buffers[kernel.buffer].data = np.frombuffer(quantized.tobytes(), np.uint8)
            kernel.type = schema.TensorType.INT8
            kernel.quantization = schema.QuantizationParametersT()
            kernel.quantization.scale = scale.astype(np.float32).tolist()
            kernel.quantization.zeroPoint = [0] * len(scale)
            kernel.quantization.quantizedDimension = 0
            op.builtinOptions.asymmetricQuantizeInputs = True
            changed += 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), changed


def _quantize_int8(calibrated):
    """The "int8" file from a calibrated flatbuffer (see `_INT8_OP_TYPES`)."""
    from tensorflow.lite.python import convert as tflite_convert

    ops = _op_list(calibrated)
    denylisted_ops = sorted({name for name, _ in ops} - set(_INT8_OP_TYPES))
    dynamic = [
        output
        for name, output in ops
        if name == "FULLY_CONNECTED" and not _INT8_STATIC_MATMULS.search(output)
    ]
    # What tf.lite.experimental.QuantizationDebugger.get_nondebug_quantized_model
    # runs, minus its debug model: the quantizer with ops left in float.
    content = tflite_convert.mlir_quantize(calibrated, denylisted_ops=denylisted_ops, denylisted_nodes=dynamic)
    content, changed = _int8_weights_for_float_matmuls(content)
    static = sum(1 for name, _ in ops if name == "FULLY_CONNECTED") - changed
    note = (
        f"mixed int8: int8 weights and embeddings; {static} attention value matmuls int8 x int8 with calibrated ranges, "
        f"{changed} other matmuls with dynamically quantized inputs; attention scores, softmax, LayerNorm, "
        "GELU and residual adds in float32"
    )
    return content, note


def _calibration_stats(content):
    """{tensor name: (min, max)} that calibration recorded in a flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    return {
        tensor.name: (list(tensor.quantization.min), list(tensor.quantization.max))
        for graph in model.subgraphs
        for tensor in graph.tensors
        if tensor.quantization is not None and tensor.quantization.min is not None
    }


def _with_calibration_stats(content, stats):
    """`content` with the ranges of `stats` on its tensors of the same names; returns (bytes, tensors set)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    done = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.name in stats and tensor.quantization is not None and tensor.quantization.min is not None:
                tensor.quantization.min, tensor.quantization.max = stats[tensor.name]
                done += 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), done


def _to_tflite(function, weights, flavour, quantize, representative_dataset, ids_function=None, text_example=None):
    """Converts the function; returns (flatbuffer bytes, note on what int8 did or None).

    int8 calibrates the "ids" function (`ids_function` for the "text"
    flavour) on `representative_dataset`. TensorFlow's calibrator does not
    feed string inputs reliably (ranges changed with the order of the texts),
    so a "text" file takes the ids file's ranges, tensor by tensor (the model
    part of both graphs has the same tensor names), after a calibration run on
    `text_example` that only records which tensors need ranges."""

    def converter(fn, flavour, representative=None):
        c = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], weights)
        c.allow_custom_ops = flavour == "text"  # tensorflow_text's TFLite ops, nothing else
        if quantize != "none":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            c.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            c.representative_dataset = representative
            c._experimental_calibrate_only = True  # noqa: SLF001 - the min/max stats, quantized below
            if flavour == "text":
                c.target_spec._experimental_custom_op_registerers = list(tf_text.tflite_registrar.SELECT_TFTEXT_OPS)  # noqa: SLF001
        return c

    if quantize != "int8":
        return converter(function, flavour).convert(), None
    calibrated = converter(ids_function or function, "ids", representative_dataset).convert()
    if flavour == "text":
        stats = _calibration_stats(calibrated)
        calibrated = converter(function, "text", lambda: iter([text_example])).convert()
        calibrated, done = _with_calibration_stats(calibrated, stats)
        logging.info("int8 text flavour: %d of the ids file's %d calibrated ranges applied", done, len(stats))
    return _quantize_int8(calibrated)


def _custom_op_interpreter(**kwargs):
    """TensorFlow's TFLite interpreter with tensorflow_text's custom ops registered."""
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

    with warnings.catch_warnings():  # its deprecation notice: LiteRT has no tf_text ops of its own
        warnings.simplefilter("ignore", UserWarning)
        return InterpreterWithCustomOps(custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS, **kwargs)


def _builtin_interpreter(**kwargs):
    """The stock LiteRT interpreter (`ai_edge_litert`) if installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(**kwargs)
    return Interpreter(**kwargs)


def _describe(content):
    """The signature's inputs/outputs (name, dtype, shape) and the ops of a converted file."""
    interpreter = _custom_op_interpreter(model_content=content)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)

    def details(items):
        return [
            {
                "name": name,
                "dtype": "string" if np.dtype(d["dtype"]).type in STRING_TYPES else np.dtype(d["dtype"]).name,
                "shape": [int(n) for n in d["shape"]],
            }
            for name, d in sorted(items.items())
        ]

    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})  # noqa: SLF001 - no public op list
    return details(runner.get_input_details()), details(runner.get_output_details()), ops


def _builtin_op_names():
    from tensorflow.lite.python import schema_py_generated as schema

    return {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")} - {"CUSTOM"}


def metadata_path(tflite_path):
    """The JSON written beside a .tflite file: `model.tflite` → `model.json`."""
    return os.path.splitext(tflite_path)[0] + ".json"


def _vocab_bytes(tokenizer):
    return ("\n".join(tokenizer.get_vocabulary()) + "\n").encode("utf-8")


def check(model, flavour="ids", quantize="none", seq_length=None, representative_texts=None):
    """Raises what `convert` would for these arguments (UnsupportedExport,
    ValueError) before anything is written or converted.

    Returns:
        (the model's serving head, its TFLite function, the seq_length).
    """
    head = tasks.serving_head(model)
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour={flavour!r}; expected one of {FLAVOURS}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r}; expected one of {QUANTIZATIONS}")
    if quantize == "int8" and not representative_texts:
        raise ValueError(
            "quantize='int8' calibrates activations on real inputs: pass representative_texts= "
            "(a few hundred sentences from the training data), or use quantize='dynamic_int8'"
        )
    # The head says whether its type has a TFLite form (UnsupportedExport if not) and checks seq_length.
    function, seq_length = head.tflite_function(flavour, seq_length)
    if not isinstance(model.tokenizer, WordPieceTokenizer):
        raise ValueError(f"model.tokenizer is a {type(model.tokenizer).__name__}; TFLite export needs a WordPieceTokenizer")
    return head, function, seq_length


def convert(
    model,
    output_path,
    *,
    flavour="ids",
    quantize="none",
    seq_length=None,
    representative_texts=None,
):
    """Writes `model` as a TFLite file (see the module docstring); returns its path.

    Nothing is written unless the conversion succeeds, and each file is
    written to a temporary name and renamed, so a reader never sees half a
    file. Beside the .tflite file go `<name>.json` (flavour, quantization,
    seq_length, inputs and outputs with dtypes and shapes, the ops the file
    uses, tokenizer settings and special-token ids, label names) and, for the
    "ids" flavour, the tokenizer's `vocab.txt` (an existing different
    `vocab.txt` there is an error: one model per directory).

    Args:
        model: a model whose task type's serving head has a TFLite function
            (`BertClassifier`, `BertEncoder`), with its `BertPreprocessor`
            (as `from_pretrained` and the tasks build it).
        output_path: the .tflite file to write; its directory is created.
        flavour: "ids" (token ids in, builtin ops only) or "text" (strings
            in, tensorflow_text custom ops).
        quantize: one of `QUANTIZATIONS`.
        seq_length: the static sequence length; defaults to that of
            `model.preprocessor` (at most the encoder's max_length).
        representative_texts: sentences (or (text_a, text_b) pairs for a
            sentence-pair model) to calibrate int8 activations on; required for
            "int8", a few hundred from the training data is typical. They
            are tokenized and fed to the "ids" function; a "text" file takes
            the ranges so found (`_to_tflite`).

    Returns:
        `output_path`.

    Raises:
        UnsupportedExport: the model's task type has no TFLite form (`GPT`,
            `BertPretrainer`): export a SavedModel.

    Example:
    >>> model = BertClassifier.from_pretrained("path/to/checkpoint", num_classes=2)  # doctest: +SKIP
    >>> convert(model, "out/sst2.tflite", quantize="dynamic_int8")  # doctest: +SKIP
    'out/sst2.tflite'
    """
    head, function, seq_length = check(model, flavour, quantize, seq_length, representative_texts)
    tokenizer = model.tokenizer
    output_path = os.fspath(output_path)
    if os.path.isdir(output_path):
        raise ValueError(f"output_path {output_path!r} is a directory; pass the .tflite file to write")
    directory = os.path.dirname(os.path.abspath(output_path))
    vocab_path = os.path.join(directory, "vocab.txt")
    if flavour == "ids" and os.path.exists(vocab_path):
        with open(vocab_path, "rb") as f:
            if f.read() != _vocab_bytes(tokenizer):
                raise ValueError(
                    f"{vocab_path} holds another vocabulary; write this model's file to its own directory"
                )

    weights = tf.Module()
    # The tf.Variables under the Keras variables, and nothing else: tracking
    # the Keras variables leaves them as uninitialized READ_VARIABLE ops instead
    # of constants (so quantization skips them), and tracking the model would
    # bring its tokenizer's hash table, whose initializer TFLite cannot run.
    weights.variables_to_export = [getattr(w, "value", w) for w in model.weights]
    representative = ids_function = text_example = None
    if quantize == "int8":
        representative = _representative_dataset(head.inputs, tokenizer, representative_texts, seq_length)
        if flavour == "text":
            ids_function, _ = head.tflite_function("ids", seq_length)
            first = _as_segments(representative_texts[0], head.inputs)
            text_example = {name: np.array([text], dtype=object) for name, text in zip(head.inputs, first)}
    logging.info(
        "converting %s to TFLite: flavour=%s quantize=%s seq_length=%d",
        type(model).__name__, flavour, quantize, seq_length,
    )
    try:
        content, int8_note = _to_tflite(
            function, weights, flavour, quantize, representative, ids_function, text_example
        )
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(
            f"TFLite conversion of {type(model).__name__} (flavour={flavour!r}, quantize={quantize!r}) failed: "
            f"{_first_line(error)}"
        ) from error
    inputs, outputs, ops = _describe(content)
    custom_ops = sorted(set(ops) - _builtin_op_names())  # tensorflow_text's, or Flex ops
    if flavour == "ids" and custom_ops:
        raise RuntimeError(f"the 'ids' flavour must use builtin ops only, but the converter emitted {custom_ops}")

    metadata = {
        "format": "tfplm.tflite",
        "model_class": type(model).__name__,
        "serving_head": type(head).__name__,
        "flavour": flavour,
        "quantize": quantize,
        "int8": int8_note,
        "signature": SIGNATURE_KEY,
        "seq_length": seq_length,
        "inputs": inputs,
        "outputs": outputs,
        **head.describe(),
        "ops": ops,
        "custom_ops": custom_ops,
        "op_resolver": OP_RESOLVER if custom_ops else None,
    }
    metadata["tokenizer"] = {
        "type": "bert_wordpiece",
        "vocab_file": "vocab.txt" if flavour == "ids" else None,  # "text": the vocab is in the model
        "vocab_size": tokenizer.vocabulary_size(),
        "lowercase": bool(tokenizer.lowercase),
        "suffix_indicator": "##",
        "unknown_token": "[UNK]",
        "special_token_ids": {
            token: tokenizer.token_to_id(token) for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
        },
        "packing": "[CLS] A [SEP] (B [SEP]), trimmed round-robin to seq_length, padded with [PAD]; "
        "input_mask 1 on tokens; input_type_ids 0 for [CLS] A [SEP], 1 for B [SEP]",
    }
    os.makedirs(directory, exist_ok=True)
    if flavour == "ids":
        publish.write_bytes(vocab_path, _vocab_bytes(tokenizer))
    publish.write_text(metadata_path(output_path), json.dumps(metadata, indent=2) + "\n")
    publish.write_bytes(output_path, content)
    logging.info("wrote %s (%d bytes)", output_path, len(content))
    return output_path


def _as_list(texts, name):
    if isinstance(texts, (str, bytes)):
        return [texts]
    if isinstance(texts, (tf.Tensor, np.ndarray)):
        return np.asarray(texts).reshape(-1).tolist()
    try:
        return list(texts)
    except TypeError:
        raise ValueError(f"{name} must be a string or a list of strings, got {type(texts).__name__}") from None


class TFLiteModel:
    """Runs a file written by `convert` on a batch of texts.

    Each text is one batch-1 invocation of the `serving_default` signature
    runner, which is created once and reused. The "ids" flavour runs on the
    stock LiteRT interpreter (`ai_edge_litert`, else `tf.lite.Interpreter`)
    after tokenizing with `preprocessor`; the "text" flavour feeds the
    strings to TensorFlow's interpreter with tensorflow_text's ops registered.

    Args:
        path: a .tflite file from `convert`.
        preprocessor: for the "ids" flavour, the Keras model's
            `BertPreprocessor` (or its `WordPieceTokenizer`); its tokenizer is
            used at the file's seq_length. Default: built from the
            `vocab.txt` and `<name>.json` beside the file.
        num_threads: interpreter threads (default: the runtime's choice).

    Attributes:
        flavour: "ids" or "text".
        size_bytes: size of the .tflite file.
        seq_length, input_names, output_names, metadata (the JSON, or None).

    Example:
    >>> runner = TFLiteModel("out/sst2.tflite")  # doctest: +SKIP
    >>> runner(["a gorgeous, witty film", "dull"])["probabilities"].shape  # doctest: +SKIP
    (2, 2)
    """

    def __init__(self, path, preprocessor=None, *, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"TFLite file {path!r} does not exist; write one with tfplm.export.tflite")
        self.path = path
        self.size_bytes = os.path.getsize(path)
        self.metadata = None
        if os.path.isfile(metadata_path(path)):
            with open(metadata_path(path), encoding="utf-8") as f:
                self.metadata = json.load(f)
        threads = {} if num_threads is None else {"num_threads": num_threads}
        self._interpreter = _custom_op_interpreter(model_path=path, **threads)
        signatures = self._interpreter.get_signature_list()
        if SIGNATURE_KEY not in signatures:
            raise ValueError(
                f"{path!r} has no {SIGNATURE_KEY!r} signature (it has {sorted(signatures)}); write it with convert()"
            )
        self.flavour = "text" if "text" in signatures[SIGNATURE_KEY]["inputs"] else "ids"
        if self.flavour == "ids":  # builtin ops only: the stock runtime an app would use
            self._interpreter = _builtin_interpreter(model_path=path, **threads)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        input_details = self._runner.get_input_details()
        self.input_names = tuple(sorted(input_details))
        self._output_details = self._runner.get_output_details()
        self.output_names = tuple(sorted(self._output_details))
        self.pair = "text_b" in self.input_names
        if self.flavour == "ids":
            self.seq_length = int(input_details["input_word_ids"]["shape"][1])
            self.pair = bool(self.metadata and self.metadata.get("pair"))
            self.preprocessor = self._ids_preprocessor(preprocessor)
            # Traced once: eager tokenization of one short text costs more than the model.
            texts_spec = [tf.TensorSpec([None], tf.string)] * (2 if self.pair else 1)
            self._tokenize = tf.function(
                lambda *texts: self.preprocessor(texts if self.pair else texts[0]), input_signature=texts_spec
            )
        else:
            self.seq_length = self.metadata["seq_length"] if self.metadata else None
            self.preprocessor = None

    def _ids_preprocessor(self, preprocessor):
        if preprocessor is None:
            settings = (self.metadata or {}).get("tokenizer")
            directory = os.path.dirname(os.path.abspath(self.path))
            # The .json beside a downloaded .tflite names the vocab: it must stay in the folder.
            vocab = inside(directory, (settings or {}).get("vocab_file") or "vocab.txt", "the .json's 'tokenizer.vocab_file'")
            if settings is None or not os.path.isfile(vocab):
                raise ValueError(
                    f"{self.path!r} takes token ids: pass preprocessor= (the Keras model's BertPreprocessor), "
                    "or keep the vocab.txt and .json that convert() writes beside it"
                )
            tokenizer = WordPieceTokenizer(vocab, lowercase=settings["lowercase"])
        elif isinstance(preprocessor, BertPreprocessor):
            tokenizer = preprocessor.tokenizer
        elif isinstance(preprocessor, WordPieceTokenizer):
            tokenizer = preprocessor
        else:
            raise ValueError(
                f"preprocessor is a {type(preprocessor).__name__}; pass a BertPreprocessor or WordPieceTokenizer"
            )
        if isinstance(preprocessor, BertPreprocessor) and preprocessor.seq_length == self.seq_length:
            return preprocessor
        return BertPreprocessor(tokenizer, seq_length=self.seq_length)

    def _feeds(self, texts, texts_b):
        if self.flavour == "text":
            for i, text in enumerate(texts):
                feed = {"text": np.array([text], dtype=object)}
                if texts_b is not None:
                    feed["text_b"] = np.array([texts_b[i]], dtype=object)
                yield feed
            return
        segments = (texts,) if texts_b is None else (texts, texts_b)
        packed = self._tokenize(*(tf.constant(s, tf.string) for s in segments))
        packed = {name: tensor.numpy() for name, tensor in packed.items()}
        for i in range(len(texts)):
            yield {name: packed[name][i : i + 1] for name in ID_INPUTS}

    def __call__(self, texts, texts_b=None):
        """Outputs for each text (and its pair's second text).

        Args:
            texts: a string or a list of strings (str or UTF-8 bytes; invalid
                bytes are tolerated).
            texts_b: the second texts, for files of sentence-pair models.

        Returns:
            dict of output name → np.ndarray with a leading batch dimension of
            len(texts), e.g. `probabilities` [batch, classes].
        """
        texts = _as_list(texts, "texts")
        if texts_b is not None:
            texts_b = _as_list(texts_b, "texts_b")
            if len(texts_b) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(texts_b)} texts_b; pass one second text per text")
        if (texts_b is not None) != self.pair:
            fix = "sentence pairs: pass texts_b" if self.pair else "single texts: drop texts_b"
            raise ValueError(f"{self.path!r} was exported for {fix}")
        if not texts:
            return {
                name: np.zeros((0, *self._output_details[name]["shape"][1:]), self._output_details[name]["dtype"])
                for name in self.output_names
            }
        results = [self._runner(**feed) for feed in self._feeds(texts, texts_b)]
        return {name: np.concatenate([r[name] for r in results], axis=0) for name in self.output_names}
