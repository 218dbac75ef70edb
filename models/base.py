"""What every zoo model shares: `save_pretrained`/`from_pretrained`, a `.keras`
`save` for inference (no optimizer state unless asked), a `fit` that checks
the learning-rate schedule, and for BERT models a `preprocessor` that is part
of the model, so `predict`, `evaluate` and `fit` take raw text:

    classifier = tfplm.models.BertClassifier.from_pretrained(path, num_classes=2)
    classifier.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(["a fine film", "dull"], [1, 0], epochs=3)
    classifier.predict(["a film", "dull"])  # logits [2, 2]
    classifier.save("classifier.keras")  # keras.models.load_model after `import tfplm`
"""

import contextlib
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfplm.data import pipeline
from tfplm.training.optimization import ScheduleCheck

# What a preprocessor gives: the raw-text models take exactly these inputs.
ENCODER_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained`, `save` and `fit` for the zoo's models.

    `from_pretrained` reads tfplm, Hugging Face, Google BERT and keras-nlp
    checkpoints (see `tfplm.models.pretrained`); the model it builds carries
    the checkpoint's tokenizer (BERT models: in their `preprocessor`).
    `save` writes a `.keras` file without the optimizer's state unless asked;
    `fit` fails fast when it would run other than the steps the learning-rate
    schedule was made for.
    """

    def save_pretrained(self, directory):
        """Writes this model + its tokenizer in tfplm's format (see `save_pretrained`)."""
        from tfplm.models.pretrained import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """This class from a checkpoint directory (see `load_pretrained` for arguments)."""
        from tfplm.models.pretrained import load_pretrained

        return load_pretrained(path, cls.__name__, **kwargs)[0]

    def save(self, filepath, overwrite=True, zipped=None, include_optimizer=False, **kwargs):
        """Saves a `.keras` file for inference: config (preprocessing included)
        and weights, without the optimizer.

        Unlike Keras's default, the optimizer's state (Adam: two values per
        weight, twice the model) and the compile config are left out unless
        `include_optimizer=True`; `keras.models.load_model` (after
        `import tfplm`) then returns an uncompiled model, ready to predict or
        to compile again.

        Args:
            filepath: a path ending in `.keras`.
            overwrite: replace an existing file.
            zipped: as in `keras.Model.save`.
            include_optimizer: keep the optimizer's state and the compile
                config, to resume training from the file.
            **kwargs: passed to `keras.Model.save`.
        """
        if include_optimizer or getattr(self, "optimizer", None) is None:
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        with _uncompiled(self):
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def fit(self, *args, callbacks=None, **kwargs):
        """Keras `fit`, which also checks that it runs the steps the optimizer's
        learning-rate schedule was made for (`ScheduleCheck`; with
        `steps_per_epoch`, at most those): a ValueError names both numbers
        otherwise."""
        callbacks = [*(callbacks or []), ScheduleCheck(budget=kwargs.get("steps_per_epoch") is not None)]
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)):
            # Keras cannot shuffle a dataset (the pipeline does); its default
            # shuffle=True would only print a warning on every fit.
            kwargs.setdefault("shuffle", False)
        return super().fit(*args, callbacks=callbacks, **kwargs)


class TextModel(PretrainedMixin):
    """A BERT model whose `preprocessor` (a `BertPreprocessor`: tokenizer +
    packing) is a constructor argument, saved with it.

    `predict`, `evaluate` and `fit` take raw text as well as Keras inputs:
    a Python list, numpy array or pandas Series of str, or a tuple
    `(texts, texts_b)` of sentence pairs. The model's preprocessor tokenizes
    it in a `tfplm.data.text_dataset` pipeline: in order and padded to each
    batch's longest text for `predict`/`evaluate`, shuffled and batched by
    length for `fit` (one epoch = ceil(len(texts) / batch_size) steps).
    Tensors, dicts and datasets go to Keras unchanged.
    """

    def __setattr__(self, name, value):
        # The one place every BERT model takes its preprocessor: longer inputs
        # than the position embeddings fail on CPU and read zeros on GPU.
        if name == "preprocessor" and value is not None:
            check_seq_length(value.seq_length, self.max_length)
        super().__setattr__(name, value)

    @property
    def tokenizer(self):
        """The preprocessor's tokenizer, or None for a bare model."""
        return None if self.preprocessor is None else self.preprocessor.tokenizer

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Keras `predict`; `x` may be raw text (see the class docstring).

        Outputs with a length axis (a `BertEncoder`'s `sequence_output`) are
        padded to the preprocessor's `seq_length` so that batches stack.
        """
        texts = _as_texts(x)
        if texts is not None:
            x, batch_size = self._text_dataset(texts, None, batch_size, pad=self._has_length_axis()), None
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Keras `evaluate`; `x` may be raw text, with its labels `y`."""
        texts = _as_texts(x)
        if texts is not None:
            x, y, batch_size = self._labeled_text_dataset(texts, y, batch_size, kwargs, training=False), None, None
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, **kwargs):
        """Keras `fit`; `x` (and `validation_data=(texts, labels)`) may be raw
        text with its labels. Raw training text is shuffled and batched by
        length (batch_size default 32)."""
        validation = kwargs.get("validation_data")
        if isinstance(validation, tuple) and len(validation) == 2 and _as_texts(validation[0]) is not None:
            validation_batch_size = kwargs.pop("validation_batch_size", None) or batch_size
            kwargs["validation_data"] = self._labeled_text_dataset(
                _as_texts(validation[0]), validation[1], validation_batch_size, {}, training=False
            )
        texts = _as_texts(x)
        if texts is not None:
            x, y = self._labeled_text_dataset(texts, y, batch_size, kwargs, training=True), None
            batch_size = None
            kwargs["shuffle"] = False  # the dataset shuffles
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, **kwargs)

    def _labeled_text_dataset(self, texts, labels, batch_size, kwargs, training):
        if labels is None:
            raise ValueError("raw texts need their labels here: pass (texts, labels)")
        if kwargs.get("sample_weight") is not None:
            raise ValueError(
                "sample_weight does not go with raw texts; pass a tf.data.Dataset of (inputs, label, weight)"
            )
        return self._text_dataset(texts, labels, batch_size, training=training)

    def _text_dataset(self, texts, labels, batch_size, training=False, pad=False):
        if self.preprocessor is None:
            raise ValueError(
                f"this {type(self).__name__} has no preprocessor, so it cannot read raw text; load it with "
                "from_pretrained(...) or build it with preprocessor=BertPreprocessor(tokenizer), or pass "
                f"its inputs {list(ENCODER_INPUTS)}"
            )
        extra = sorted(set(self.input) - set(ENCODER_INPUTS))
        if extra:
            raise ValueError(
                f"{type(self).__name__} also takes {extra}, which raw text does not give; pass a dict of its inputs"
            )
        return pipeline.text_dataset(
            texts,
            labels,
            preprocessor=self.preprocessor,
            batch_size=batch_size or 32,
            training=training,
            pad_to_seq_length=pad,
        )

    def _has_length_axis(self):
        return any(None in tuple(output.shape)[1:] for output in keras.tree.flatten(self.outputs))


def check_seq_length(seq_length, max_length):
    """Raises unless a preprocessor's `seq_length` fits a model of `max_length` positions.

    Example:
    >>> check_seq_length(1024, 512)
    Traceback (most recent call last):
    ...
    ValueError: preprocessor seq_length=1024 is longer than the model's max_length=512 positions; use a seq_length of at most 512
    """
    if not isinstance(seq_length, numbers.Integral) or isinstance(seq_length, bool) or seq_length < 1:
        raise ValueError(f"preprocessor seq_length={seq_length!r}; expected a positive integer")
    if seq_length > max_length:
        raise ValueError(
            f"preprocessor seq_length={seq_length} is longer than the model's max_length={max_length} "
            f"positions; use a seq_length of at most {max_length}"
        )


@contextlib.contextmanager
def _uncompiled(model):
    """`model` as if never compiled, while the block runs: Keras's saving then
    stores neither its optimizer's variables nor its compile config. (Keras 3
    has no `include_optimizer`; its attribute hooks are bypassed so that
    nothing else about the model changes.)"""
    state = {name: model.__dict__[name] for name in ("optimizer", "compiled")}
    del model.__dict__["optimizer"]
    model.__dict__["compiled"] = False
    try:
        yield model
    finally:
        model.__dict__.update(state)


def _as_texts(x):
    """`x` as `text_dataset` texts (a list of str, or a tuple of two lists for
    sentence pairs), or None when `x` is not text (tensors, dicts, datasets)."""
    if isinstance(x, (str, bytes)):
        return [x]
    if isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], (str, bytes)):
        pair = [_text_column(column) for column in x]
        if all(column is not None for column in pair):
            return tuple(pair)
    return _text_column(x)


def _text_column(x):
    """A one-dimensional collection of str (or bytes) as a list, else None."""
    if hasattr(x, "to_numpy") and not isinstance(x, (tf.Tensor, np.ndarray)):
        x = x.to_numpy()  # pandas
    if isinstance(x, tf.Tensor):
        return list(x.numpy()) if x.dtype == tf.string and x.shape.rank == 1 else None
    if isinstance(x, np.ndarray):
        x = x.tolist() if x.ndim == 1 and x.dtype.kind in "USO" else None
    if isinstance(x, (list, tuple)) and x and all(isinstance(value, (str, bytes)) for value in x):
        return list(x)
    return None


def serialize(layer):
    """A Keras layer's serialized config, or None."""
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def deserialize(config):
    """The layer of a `serialize`d config (or a layer passed as is), or None."""
    if config is None or not isinstance(config, dict):
        return config
    return keras.saving.deserialize_keras_object(config)
