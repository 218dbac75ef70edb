"""The zoo's model families, in one table: what checkpoints need to know about models.

`tfplm.models.pretrained` reads, builds and saves every family alike; what is
particular to a family is here: its model classes and how each is built from a
read `Checkpoint`, how its models carry a tokenizer, and the converters that
read other libraries' checkpoints of it. A family's name is also the family of
its presets (`tfplm.models.list_presets(name)`).

Adding a family (say RoBERTa) takes its model module, its converters in
`checkpoints/` and one `Family(...)` in `FAMILIES`. The encoder-decoder
Transformer has only tfplm's own checkpoints (no converters).

Example:
>>> get("gpt2").name
'gpt'
>>> [model.cls.__name__ for model in get("bert").models]
['BertEncoder', 'BertPretrainer', 'BertClassifier', 'BertSpanLabeler', 'BertSimilarity', 'BertTokenClassifier']
"""

import dataclasses
from typing import Callable

from tfplm.models.base import check_seq_length
from tfplm.models.bert import BertClassifier, BertEncoder, BertPretrainer, BertSimilarity, BertSpanLabeler, BertTokenClassifier
from tfplm.models.checkpoints import google, huggingface, keras_preset
from tfplm.models.checkpoints.common import CheckpointError, read_json
from tfplm.models.gpt import GPT
from tfplm.models.seq2seq import Seq2SeqTransformer
from tfplm.tokenizers import BertPreprocessor


@dataclasses.dataclass(frozen=True)
class ModelClass:
    """A model class of a family, and how to build it from a `Checkpoint`.

    Attributes:
        cls: the class.
        build: `(checkpoint, config, preprocessing, num_classes, dropout) ->
            (model, prefixes of newly initialised heads)`. `config` holds the
            backbone's constructor arguments (the checkpoint's, with the
            caller's overrides), `preprocessing` the backbone arguments that
            carry the tokenizer (`Family.preprocessing`); `num_classes` and
            `dropout` are those of `load_pretrained`.
        heads: weight-path prefixes of its heads (keys of
            `checkpoints.common.HEAD_PREFIXES`); another library's checkpoint
            that has them all loads into this class by default.
    """

    cls: type
    build: Callable
    heads: tuple = ()


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its classes, its kind of preprocessing, its converters.

    Attributes:
        name: `Checkpoint.family`, and the family of its presets.
        models: its `ModelClass`es, the backbone first.
        preprocessing: `(checkpoint, seq_length, config) -> backbone arguments`
            that make a backbone of `config` carry the checkpoint's tokenizer
            (and the preprocessing settings a tfplm checkpoint saved).
        converters: source format ("huggingface", "google", "keras_nlp") →
            {what the source calls the architecture (a Hugging Face
            `model_type`, a keras-hub backbone class): reader}; a reader is
            `(path, do_lower_case=None) -> Checkpoint`.
        aliases: other names of the family (e.g. "gpt2").
    """

    name: str
    models: tuple
    preprocessing: Callable
    converters: dict
    aliases: tuple = ()

    @property
    def backbone(self):
        """The class every other class of the family wraps."""
        return self.models[0].cls

    def model(self, class_name):
        """The `ModelClass` called `class_name`."""
        return next(model for model in self.models if model.cls.__name__ == class_name)

    def default_model(self, checkpoint):
        """The class with the most heads, all of them in `checkpoint` (else the backbone)."""
        fitting = [m for m in self.models if all(checkpoint.has_head(head) for head in m.heads)]
        return max(fitting, key=lambda model: len(model.heads))


# --- how each class is built ----------------------------------------------------


def _backbone(cls, task=None):
    """The build function of `cls`, or of `task(cls(...))` (a model whose heads
    take no arguments): `dropout` is the backbone's, there is no `num_classes`."""
    name = (task or cls).__name__

    def build(checkpoint, config, preprocessing, num_classes=None, dropout=None):
        if num_classes is not None:
            raise TypeError(f"num_classes is a BertClassifier argument, not {name}'s")
        if dropout is not None:
            config = {**config, "dropout": dropout}
        backbone = cls(**config, **preprocessing)
        return (backbone if task is None else task(backbone)), ()

    return build


def _bert_classifier(checkpoint, config, preprocessing, num_classes=None, dropout=None):
    """A `BertClassifier`: the checkpoint's head, or a new one of `num_classes`."""
    fresh = ()
    if checkpoint.num_classes is None:
        if num_classes is None:
            raise CheckpointError(
                f"{checkpoint.path!r} has no classifier head: pass num_classes= to start a new one"
            )
        fresh = ("classifier/",)
    elif num_classes is not None and num_classes != checkpoint.num_classes:
        raise CheckpointError(
            f"{checkpoint.path!r} has a {checkpoint.num_classes}-class classifier head, not "
            f"{num_classes}; for a new head use BertClassifier(BertEncoder.from_pretrained(path), {num_classes})"
        )
    num_classes = num_classes or checkpoint.num_classes
    if dropout is None:
        dropout = 0.1 if checkpoint.classifier_dropout is None else checkpoint.classifier_dropout
    label_names = checkpoint.label_names if num_classes == checkpoint.num_classes else None
    encoder = BertEncoder(**config, **preprocessing)
    return BertClassifier(encoder, num_classes, dropout, label_names=label_names), fresh


def _bert_span_labeler(checkpoint, config, preprocessing, num_classes=None, dropout=None):
    """A `BertSpanLabeler`: the checkpoint's span head and settings, or a new head
    (of an encoder-only checkpoint, e.g. Hugging Face `BertModel`)."""
    if num_classes is not None:
        raise TypeError("num_classes is a BertClassifier argument, not BertSpanLabeler's")
    if dropout is not None:
        config = {**config, "dropout": dropout}
    settings = {}
    if checkpoint.source_format == "tfplm" and checkpoint.class_name == "BertSpanLabeler":
        from tfplm.models.pretrained import FORMAT_FILE  # pretrained imports this module

        # Its doc_stride, answer length, ...: saved in the config around the encoder's.
        saved = read_json(checkpoint.path, FORMAT_FILE)["config"]
        settings = {key: saved[key] for key in BertSpanLabeler.SETTINGS if key in saved}
    fresh = () if checkpoint.has_head("span_labeler/") else ("span_labeler/",)
    return BertSpanLabeler(BertEncoder(**config, **preprocessing), **settings), fresh


def _bert_token_classifier(checkpoint, config, preprocessing, num_classes=None, dropout=None):
    """A `BertTokenClassifier`: a tfplm token classifier's own head, or a new one of `num_classes`."""
    own = checkpoint.class_name == "BertTokenClassifier"
    if not own and num_classes is None:
        raise CheckpointError(f"{checkpoint.path!r} has no token classifier head: pass num_classes= to start a new one")
    if own and num_classes not in (None, checkpoint.num_classes):
        raise CheckpointError(
            f"{checkpoint.path!r} has a {checkpoint.num_classes}-tag head, not {num_classes}; for a new head use "
            f"BertTokenClassifier(BertEncoder.from_pretrained(path), {num_classes})"
        )
    if dropout is None:
        dropout = checkpoint.classifier_dropout if own and checkpoint.classifier_dropout is not None else 0.1
    encoder = BertEncoder(**config, **preprocessing)
    if own:
        return BertTokenClassifier(encoder, checkpoint.num_classes, dropout, label_names=checkpoint.label_names), ()
    return BertTokenClassifier(encoder, num_classes, dropout), ("classifier/",)


def _bert_preprocessing(checkpoint, seq_length, config):
    """BERT models pack text with a `BertPreprocessor` (default length min(128, max_length))."""
    length = seq_length or min(128, config["max_length"])
    try:
        check_seq_length(length, config["max_length"])
    except ValueError as error:
        raise CheckpointError(f"{checkpoint.path!r}: {error}") from None
    return {"preprocessor": BertPreprocessor(checkpoint.tokenizer, seq_length=length, pair=checkpoint.pair)}


def _gpt_preprocessing(checkpoint, seq_length, config):
    """GPT takes the tokenizer itself (generation has no fixed length)."""
    return {"tokenizer": checkpoint.tokenizer}


# --- the table ------------------------------------------------------------------

FAMILIES = (
    Family(
        name="bert",
        models=(
            ModelClass(BertEncoder, _backbone(BertEncoder)),
            ModelClass(
                BertPretrainer, _backbone(BertEncoder, BertPretrainer), ("masked_lm_head/", "next_sentence_head/")
            ),
            ModelClass(BertClassifier, _bert_classifier, ("classifier/",)),
            ModelClass(BertSpanLabeler, _bert_span_labeler, ("span_labeler/",)),
            ModelClass(BertSimilarity, _backbone(BertEncoder, BertSimilarity)),
            # No heads listed: a checkpoint's "classifier/" is BertClassifier's by default.
            ModelClass(BertTokenClassifier, _bert_token_classifier),
        ),
        preprocessing=_bert_preprocessing,
        converters={
            "huggingface": {"bert": huggingface.read_bert},
            "google": {"bert": google.read},
            "keras_nlp": {"BertBackbone": keras_preset.read_bert},
        },
    ),
    Family(
        name="gpt",
        models=(ModelClass(GPT, _backbone(GPT)),),
        preprocessing=_gpt_preprocessing,
        converters={
            "huggingface": {"gpt2": huggingface.read_gpt2},
            "keras_nlp": {"GPT2Backbone": keras_preset.read_gpt2},
        },
        aliases=("gpt2",),
    ),
    Family(
        name="seq2seq",
        models=(ModelClass(Seq2SeqTransformer, _backbone(Seq2SeqTransformer)),),
        preprocessing=_gpt_preprocessing,  # the tokenizer itself, as GPT
        converters={},
    ),
)


def names():
    """Every family name and alias."""
    return [name for family in FAMILIES for name in (family.name, *family.aliases)]


def get(name):
    """The family called `name` (or an alias of it)."""
    for family in FAMILIES:
        if name == family.name or name in family.aliases:
            return family
    raise ValueError(f"unknown model family {name!r}; expected one of {names()}")


def model_classes():
    """Class name → (Family, ModelClass), for every class of every family."""
    return {model.cls.__name__: (family, model) for family in FAMILIES for model in family.models}


def converters(source_format):
    """What a source format's checkpoints can hold: {architecture: (Family, reader)}."""
    return {
        architecture: (family, reader)
        for family in FAMILIES
        for architecture, reader in family.converters.get(source_format, {}).items()
    }
