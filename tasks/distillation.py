"""Knowledge distillation of a fine-tuned classifier: `distill/<glue task>` and `distill/text_classification`.

A fine-tuned teacher (any `BertClassifier` folder of the same task, e.g. a
`glue/sst2` run's `model_dir/best`) teaches a smaller student on the task's
training data (Hinton et al., 2015):

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

where `_T` are the softmaxes at temperature T (for regression tasks the
second term is the squared error between the two scores). Optionally the
student's blocks also learn the teacher's hidden states (TinyBERT, Jiao et
al., 2020): `hidden_weight` x the mean squared error between each student
block's output, mapped to the teacher's width by a learned projection, and
the teacher block it stands for (uniformly spaced), over non-padding tokens.
Teacher outputs are computed on the fly in each training step: no stored
dataset. With `augment`, each training batch also carries a copy of its
sentences with words swapped for their nearest words in the teacher's
embedding space (TinyBERT's data augmentation): the copies learn from the
teacher's outputs alone.

The student is a `BertClassifier` with the teacher's tokenizer: a random
`preset` (optionally starting from the teacher's embeddings projected on
their principal components), the teacher cut to `student_layers` blocks
(DistilBERT's initialisation), or a pretrained folder (`init_checkpoint`)
with the teacher's vocabulary. With `student_vocabulary_size`, the student
keeps part of the teacher's vocabulary: every token its training data uses,
the special tokens and every single-character piece (so any text still
tokenizes), then the teacher's other tokens in vocabulary order (WordPiece
vocabularies list pieces by frequency) up to that size. On the training
data its tokenization is then the teacher's, token for token, so training
feeds it the teacher's ids mapped to its own; its word embeddings (most of
a small student's size) shrink to those rows. `model_dir/best` holds the
student alone, with its own tokenizer, ready for `--mode=predict` and
`tools/export.py`.

    task = tfplm.tasks.get("distill/sst2", overrides="task.glue_dir=...,task.teacher=runs/sst2/best")
    distiller = task.build_model()
    task.compile(distiller)
    distiller.fit(task.build_inputs("train"), epochs=3)
    distiller.student.save_pretrained("runs/sst2_student")
"""

import dataclasses
import functools
import itertools
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf

from tfplm.config import ConfigError, Range
from tfplm.layers.dense import Dense
from tfplm.models import BertClassifier, BertEncoder, pretrained
from tfplm.tasks import base, classification
from tfplm.tokenizers import SPECIAL_TOKENS, BertPreprocessor, WordPieceTokenizer

NEIGHBORS = 15  # TinyBERT's candidates per word


@keras.saving.register_keras_serializable(package="tfplm")
class Distiller(keras.Model):
    """A student `BertClassifier` trained against a frozen teacher `BertClassifier`.

    Called, it is the student (float32 logits [batch, classes]); its
    training loss adds the distillation terms (see the module docstring)
    to `alpha` x the compiled loss on the labels. Validation and `evaluate`
    score the student on the compiled loss alone. `save_pretrained` writes
    the student.

    Args:
        student: the `BertClassifier` to train.
        teacher: a `BertClassifier` with as many classes, fed the same inputs; frozen.
        alpha: weight of the loss on the labels; 1 - alpha goes to the teacher's outputs.
        temperature: softmax temperature of the teacher/student comparison.
        hidden_weight: weight of the hidden-state loss; 0 = none (and no projection).
        token_map: for a student with a smaller vocabulary (see `keep_tokens`),
            the student's id of each teacher id: training inputs are the
            teacher's ids; the student reads them mapped. None: the same ids.

    Example:
    >>> teacher = BertClassifier.from_preset("bert_tiny", 2, vocab_size=100)
    >>> student = BertClassifier.from_preset("bert_tiny", 2, vocab_size=100, num_layers=1, hidden_size=64)
    >>> distiller = Distiller(student, teacher, alpha=0.5, temperature=2.0, hidden_weight=1.0)
    >>> ids = keras.ops.ones((1, 8), "int32")
    >>> tuple(distiller({"input_word_ids": ids, "input_mask": ids, "input_type_ids": 0 * ids}).shape)
    (1, 2)
    """

    def __init__(self, student, teacher, alpha=0.5, temperature=2.0, hidden_weight=0.0, token_map=None, **kwargs):
        super().__init__(**kwargs)
        if student.num_classes != teacher.num_classes:
            raise ValueError(f"a {student.num_classes}-class student cannot learn a {teacher.num_classes}-class teacher")
        if not 0.0 <= alpha <= 1.0 or temperature <= 0 or hidden_weight < 0:
            raise ValueError(
                f"alpha={alpha}, temperature={temperature}, hidden_weight={hidden_weight}; "
                "expected 0 <= alpha <= 1, temperature > 0, hidden_weight >= 0"
            )
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.hidden_weight = float(hidden_weight)
        self.token_map = None if token_map is None else np.asarray(token_map, np.int32)
        if self.token_map is not None and len(self.token_map) != teacher.encoder.vocab_size:
            raise ValueError(
                f"token_map has {len(self.token_map)} entries; the teacher's vocabulary has {teacher.encoder.vocab_size}"
            )
        self.projection = None
        if self.hidden_weight:
            self.projection = Dense(teacher.encoder.hidden_size, dtype=student.dtype_policy, name="hidden_projection")
            self.projection.build((None, None, student.encoder.hidden_size))
        self._distillation_loss = None
        self.built = True  # its parts are built

    @property
    def tokenizer(self):
        return self.student.tokenizer

    @property
    def preprocessor(self):
        return self.student.preprocessor

    @property
    def num_classes(self):
        return self.student.num_classes

    @property
    def label_names(self):
        return self.student.label_names

    def layer_map(self):
        """For each student block, the teacher block it learns (uniformly spaced, the last to the last)."""
        student_layers, teacher_layers = self.student.encoder.num_layers, self.teacher.encoder.num_layers
        return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]

    def call(self, inputs, training=False):
        if not training:
            return self.student(inputs, training=False)
        # The student's forward pass as BertClassifier defines it, keeping its blocks' outputs.
        student_inputs = inputs
        if self.token_map is not None:
            student_inputs = {**inputs, "input_word_ids": keras.ops.take(self.token_map, inputs["input_word_ids"])}
        encoded = self.student.encoder(student_inputs, training=True)
        logits = self.student.head(encoded["pooled_output"], training=True)
        teacher_encoded = self.teacher.encoder(inputs, training=False)
        teacher_logits = keras.ops.stop_gradient(self.teacher.head(teacher_encoded["pooled_output"], training=False))
        loss = (1.0 - self.alpha) * self.soft_loss(teacher_logits, logits)
        if self.hidden_weight:
            mask = keras.ops.cast(inputs["input_mask"], "float32")[..., None]
            errors = []
            for student_index, teacher_index in enumerate(self.layer_map()):
                projected = keras.ops.cast(self.projection(encoded["encoder_outputs"][student_index]), "float32")
                target = keras.ops.stop_gradient(keras.ops.cast(teacher_encoded["encoder_outputs"][teacher_index], "float32"))
                squared = keras.ops.mean(keras.ops.square(projected - target), axis=-1, keepdims=True)
                errors.append(keras.ops.sum(squared * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0))
            loss = loss + self.hidden_weight * keras.ops.mean(keras.ops.stack(errors))
        # Read by `compute_loss` in the same training step (one traced function).
        object.__setattr__(self, "_distillation_loss", loss)
        return logits

    def soft_loss(self, teacher_logits, student_logits):
        """T^2 x KL(teacher || student) at temperature T, mean over the batch;
        for a regressor (one output) the mean squared difference of the scores."""
        if self.num_classes == 1:
            return keras.ops.mean(keras.ops.square(teacher_logits - student_logits))
        t = self.temperature
        teacher = keras.ops.softmax(teacher_logits / t, axis=-1)
        kl = keras.ops.sum(
            teacher * (keras.ops.log_softmax(teacher_logits / t, axis=-1) - keras.ops.log_softmax(student_logits / t, axis=-1)),
            axis=-1,
        )
        return t * t * keras.ops.mean(kl)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not training or self._distillation_loss is None:
            return loss
        return self.alpha * loss + self._distillation_loss

    def save_pretrained(self, directory):
        """Writes the student in tfplm's pretrained format (what `model_dir/best` holds)."""
        return self.student.save_pretrained(directory)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "alpha": self.alpha,
            "temperature": self.temperature,
            "hidden_weight": self.hidden_weight,
            "token_map": None if self.token_map is None else self.token_map.tolist(),
        }

    @classmethod
    def from_config(cls, config):
        models = {key: keras.saving.deserialize_keras_object(config[key]) for key in ("student", "teacher")}
        return cls(**{**config, **models})


@dataclasses.dataclass
class DistillationConfig(classification.GlueConfig):
    """The task's data as `GlueConfig` says (task_name, glue_dir or your own
    files, columns, seq_length, batch size, epochs), and the distillation.

    Attributes:
    teacher: the fine-tuned teacher: a `BertClassifier` folder of this task
        (e.g. a `glue/sst2` run's model_dir/best); its tokenizer is the student's.
    init_checkpoint: a pretrained student (any folder `from_pretrained`
        reads) with the teacher's vocabulary. Empty: see student_layers and preset.
    student_layers: > 0: the student is the teacher's encoder cut to this
        many blocks (every L/N-th block, with its embeddings and pooler).
    preset: the student's architecture when neither of the above (random,
        with the teacher's vocabulary size).
    embeddings_from_teacher: a preset student's word, position and type
        embeddings start as the teacher's, projected on the principal
        components of its word embeddings (as many as the preset's width).
    student_vocabulary_size: 0: the teacher's vocabulary. N: N of the
        teacher's tokens, those the training data needs first (see the
        module docstring): a smaller file for the edge.
    alpha: weight of the loss on the labels (1 - alpha: on the teacher's outputs).
    temperature: softmax temperature of the distillation term.
    hidden_weight: weight of the hidden-state loss (0 = none).
    augment: > 0: each training batch also carries a copy of its sentences
        in which every whole word is, with this probability, one of its
        `NEIGHBORS` nearest words (TinyBERT's augmentation); the copies
        learn from the teacher's outputs only. 0: no copies.
    """

    teacher: str = ""
    student_layers: Annotated[int, Range(min=0)] = 0
    embeddings_from_teacher: bool = False
    student_vocabulary_size: Annotated[int, Range(min=0)] = 0
    alpha: Annotated[float, Range(min=0, max=1)] = 0.5
    temperature: Annotated[float, Range(min=1e-3)] = 2.0
    hidden_weight: Annotated[float, Range(min=0)] = 0.0
    augment: Annotated[float, Range(min=0, max=1)] = 0.0


class DistillationTask(classification.ClassificationTask):
    """`ClassificationTask`'s data and metrics; the model is a `Distiller`."""

    @functools.cached_property
    def _teacher_checkpoint(self):
        c = self.task_config
        if not c.teacher:
            raise ConfigError("task.teacher is empty; point it at a fine-tuned classifier of this task (e.g. MODEL_DIR/best)")
        checkpoint = pretrained.read_checkpoint(c.teacher, family="bert")
        if checkpoint.num_classes != self.num_classes:
            what = f"a {checkpoint.num_classes}-class classifier" if checkpoint.num_classes else "no classifier head"
            raise ConfigError(
                f"task.teacher {c.teacher!r} has {what}; this task has {self.num_classes} "
                "(fine-tune a teacher on it first, e.g. tools/train.py --experiment=glue/<task>)"
            )
        if checkpoint.tokenizer is None:
            raise ConfigError(f"task.teacher {c.teacher!r} has no vocabulary files; the student uses its tokenizer")
        return checkpoint

    @functools.cached_property
    def preprocessor(self):
        """The teacher's tokenizer, packed at `task.seq_length`: training batches for both models."""
        return BertPreprocessor(self._teacher_checkpoint.tokenizer, self.task_config.seq_length, pair=self.is_pair)

    @functools.cached_property
    def kept_token_ids(self):
        """The teacher ids the student's vocabulary keeps, ascending; None: all of them."""
        size = self.task_config.student_vocabulary_size
        tokenizer = self.preprocessor.tokenizer
        if not size or size >= tokenizer.vocabulary_size():
            return None
        needed = set()
        for features, _ in self._raw_dataset("train").batch(4096):
            for name in ("text", "text_b"):
                if name in features:
                    needed.update(np.unique(tokenizer.tokenize(features[name]).flat_values.numpy()).tolist())
        vocabulary = tokenizer.get_vocabulary()
        needed.update(i for i, token in enumerate(vocabulary) if token in SPECIAL_TOKENS or len(token.removeprefix("##")) == 1)
        if len(needed) > size:
            raise ConfigError(
                f"task.student_vocabulary_size={size}, but the training data, special tokens and single characters "
                f"need {len(needed)} of the teacher's tokens; set at least {len(needed)} (or 0: the whole vocabulary)"
            )
        others = (i for i in range(len(vocabulary)) if i not in needed)
        return sorted(needed | set(itertools.islice(others, size - len(needed))))

    @functools.cached_property
    def student_preprocessor(self):
        """The student's tokenizer (the teacher's, or its kept tokens), packed at `task.seq_length`."""
        if self.kept_token_ids is None:
            return self.preprocessor
        teacher = self.preprocessor.tokenizer
        vocabulary = teacher.get_vocabulary()
        tokenizer = WordPieceTokenizer([vocabulary[i] for i in self.kept_token_ids], lowercase=teacher.lowercase)
        return BertPreprocessor(tokenizer, self.task_config.seq_length, pair=self.is_pair)

    def split_preprocessor(self, split):
        """Training batches are the teacher's ids (the `Distiller` maps them to the
        student's); evaluation batches are the student's own, as it is served."""
        return self.preprocessor if split == "train" else self.student_preprocessor

    def build_inputs(self, split, input_context=None):
        """`ClassificationTask`'s batches; with `task.augment`, training batches
        carry augmented copies (see `with_augmented_copies`)."""
        dataset = super().build_inputs(split, input_context)
        if split != "train" or not self.task_config.augment:
            return dataset
        continuation = np.array([token.startswith("##") for token in self.preprocessor.tokenizer.get_vocabulary()])
        return with_augmented_copies(
            dataset, self.word_neighbors, continuation, self.task_config.augment, self.config.runtime.seed
        )

    @functools.cached_property
    def word_neighbors(self):
        """[teacher vocabulary, NEIGHBORS] teacher ids: each whole word's nearest
        whole words (letters only; among the student's tokens) by the cosine
        of the teacher's word embeddings; any other token, itself."""
        vocabulary = self.preprocessor.tokenizer.get_vocabulary()
        kept = range(len(vocabulary)) if self.kept_token_ids is None else self.kept_token_ids
        words = np.array([i for i in kept if vocabulary[i].isalpha()])  # not "##ing", "[CLS]" or ","
        if len(words) <= NEIGHBORS:
            raise ConfigError(
                f"task.augment: the student's vocabulary has {len(words)} whole words; swapping words needs "
                f"more than {NEIGHBORS} (set task.augment=0)"
            )
        return nearest_words(self._teacher_checkpoint.weights["embedding/token_embedding/embeddings"], words, NEIGHBORS)

    def build_teacher(self):
        """The frozen teacher `BertClassifier`, without preprocessing: the student's feeds both."""
        teacher = BertClassifier.from_pretrained(self._teacher_checkpoint)
        teacher.encoder.preprocessor = teacher.preprocessor = None  # one tokenizer per saved Distiller
        return teacher

    def build_student(self, teacher):
        """The student `BertClassifier` (see `DistillationConfig`), with the teacher's tokenizer."""
        c = self.task_config
        vocabulary_size = self.preprocessor.tokenizer.vocabulary_size()
        if c.init_checkpoint:
            tokenizer = self._checkpoint.tokenizer
            if tokenizer is not None and tokenizer.get_vocabulary() != self.preprocessor.tokenizer.get_vocabulary():
                raise ConfigError(
                    f"task.init_checkpoint {c.init_checkpoint!r} has another vocabulary than task.teacher "
                    f"{c.teacher!r}; a student reads the teacher's token ids: pick a student with its vocabulary"
                )
            encoder = BertEncoder.from_pretrained(self._checkpoint)
        elif c.student_layers:
            encoder = slice_encoder(teacher.encoder, c.student_layers)
        else:
            encoder = BertEncoder.from_preset(c.preset, vocab_size=vocabulary_size, max_length=teacher.encoder.max_length)
            if c.embeddings_from_teacher:
                project_embeddings(teacher.encoder, encoder)
        if self.kept_token_ids is not None:
            encoder = keep_tokens(encoder, self.kept_token_ids)
        return BertClassifier(
            encoder, self.num_classes, c.dropout, preprocessor=self.student_preprocessor, label_names=self.label_names
        )

    def build_model(self):
        c = self.task_config
        teacher = self.build_teacher()
        token_map = None
        if self.kept_token_ids is not None:
            token_map = np.full(teacher.encoder.vocab_size, self.student_preprocessor.tokenizer.unk_token_id, np.int32)
            token_map[self.kept_token_ids] = np.arange(len(self.kept_token_ids))
        return Distiller(self.build_student(teacher), teacher, c.alpha, c.temperature, c.hidden_weight, token_map)


def nearest_words(embeddings, words, k):
    """[len(embeddings), k] row ids: for each of the rows `words`, the k other
    rows of `words` with the largest cosine similarity; any other row, itself."""
    neighbors = np.repeat(np.arange(len(embeddings))[:, None], k, axis=1)
    unit = embeddings[words] / np.maximum(np.linalg.norm(embeddings[words], axis=1, keepdims=True), 1e-12)
    for start in range(0, len(words), 2048):  # 2048 x len(words) similarities at a time
        similarity = unit[start : start + 2048] @ unit.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # not itself
        neighbors[words[start : start + 2048]] = words[np.argpartition(-similarity, k - 1, axis=1)[:, :k]]
    return neighbors


def with_augmented_copies(dataset, neighbors, continuation, probability, seed):
    """Each batch (inputs, labels) of `dataset` as (inputs and a copy, labels
    twice, weights): in the copy every whole word (a token with neighbors not
    followed by a "##" piece) is, with `probability`, a random one of its
    `neighbors` row (TinyBERT's data augmentation, Jiao et al., 2020, with
    embedding neighbours for its GloVe ones). The teacher's outputs teach the
    copies; their labels may no longer hold, so their weight is 0 and the
    originals' 2 (the label loss, a mean over the doubled batch, stays the
    originals' mean).

    Args:
        dataset: batches of (encoder inputs of token ids, labels).
        neighbors: [vocabulary, k] token ids (see `nearest_words`).
        continuation: [vocabulary] bool, the "##" pieces.
        probability: chance that each whole word of a copy is swapped.
        seed: the same seed swaps the same words of the same stream (a
            resumed run reads what the run it replaces read).
    """
    neighbors = tf.constant(neighbors, tf.int32)
    continuation = tf.constant(continuation, tf.bool)
    has_neighbors = neighbors[:, 0] != tf.range(tf.shape(neighbors)[0])

    def augment(key, batch):
        inputs, labels = batch
        ids = tf.cast(inputs["input_word_ids"], tf.int32)
        following = tf.pad(ids[:, 1:], [[0, 0], [0, 1]])  # [PAD] (0) after the last token
        whole_word = tf.gather(has_neighbors, ids) & ~tf.gather(continuation, following)
        swap = whole_word & (tf.random.stateless_uniform(tf.shape(ids), tf.stack([key, 0])) < probability)
        column = tf.random.stateless_uniform(tf.shape(ids), tf.stack([key, 1]), maxval=neighbors.shape[1], dtype=tf.int32)
        swapped = tf.where(swap, tf.gather_nd(neighbors, tf.stack([ids, column], axis=-1)), ids)
        copy = {**inputs, "input_word_ids": tf.cast(swapped, inputs["input_word_ids"].dtype)}
        both = {name: tf.concat([value, copy[name]], axis=0) for name, value in inputs.items()}
        count = tf.shape(labels)[:1]
        return both, tf.concat([labels, labels], axis=0), tf.concat([tf.fill(count, 2.0), tf.zeros(count)], axis=0)

    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(keys, dataset).map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _encoder_like(encoder, **changes):
    """A new `BertEncoder` configured as `encoder` but for `changes`, without preprocessing."""
    config = {**encoder.get_config(), **changes, "preprocessor": None}
    config.pop("name", None)
    return BertEncoder(**config)


def keep_tokens(encoder, token_ids):
    """A copy of `encoder` whose vocabulary is its rows `token_ids`, in that order."""
    student = _encoder_like(encoder, vocab_size=len(token_ids))
    for source, target in zip(encoder.weights, student.weights):
        value = source.numpy()
        target.assign(value[token_ids] if source.path.endswith("token_embedding/embeddings") else value)
    return student


def slice_encoder(encoder, num_layers):
    """A copy of `encoder` with `num_layers` of its blocks (every L/N-th, the last
    included), its embeddings and pooler (DistilBERT's student initialisation)."""
    if not 1 <= num_layers <= encoder.num_layers:
        raise ConfigError(f"task.student_layers={num_layers}; the teacher has {encoder.num_layers} blocks")
    student = _encoder_like(encoder, num_layers=num_layers)
    keep = [round((i + 1) * encoder.num_layers / num_layers) - 1 for i in range(num_layers)]
    student.embedding.set_weights(encoder.embedding.get_weights())
    student.pooler.set_weights(encoder.pooler.get_weights())
    for block, index in zip(student.blocks, keep):
        block.set_weights(encoder.blocks[index].get_weights())
    return student


def project_embeddings(teacher, student):
    """Sets `student`'s word, position and type embeddings to the teacher's projected
    on the top principal components of the teacher's word embeddings (as many as
    the student's width), scaled to the teacher's per-dimension spread."""
    if student.hidden_size > teacher.hidden_size:
        raise ConfigError(
            f"task.embeddings_from_teacher: the student ({student.hidden_size} wide) is wider than the teacher "
            f"({teacher.hidden_size}); projecting embeddings makes them narrower only"
        )
    embeddings = {w.path.split("/")[-2]: w for w in teacher.embedding.weights if w.path.endswith("/embeddings")}
    words = np.asarray(embeddings["token_embedding"].numpy(), np.float64)
    mean = words.mean(axis=0)
    _, _, directions = np.linalg.svd(words - mean, full_matrices=False)
    projection = directions[: student.hidden_size].T  # [teacher width, student width]
    for weight in student.embedding.weights:
        name = weight.path.split("/")[-2]
        if weight.path.endswith("/embeddings") and name in embeddings:
            source = np.asarray(embeddings[name].numpy(), np.float64)
            centred = source - mean if name == "token_embedding" else source
            weight.assign((centred @ projection)[: weight.shape[0]].astype(np.float32))


def distill_experiment(task_name):
    """Distillation on a GLUE task (or your files): 3 epochs, AdamW 1e-4 (small students learn
    fast), 10% warmup, batch 32, alpha 0.5, T 2."""

    def make():
        config = classification.glue_experiment(task_name)()
        config.task = DistillationConfig(task_name=task_name)
        config.trainer.optimizer.learning_rate = 1e-4
        return config

    return make


class DistillerHead(classification.ClassifierHead):
    """Serves a `Distiller`'s student (what `model_dir/best` holds)."""

    def __init__(self, model):
        super().__init__(model.student)


TASK_TYPE = base.TaskType(
    name="distillation",
    task=DistillationTask,
    serving=DistillerHead,
    models=(Distiller,),
    experiments={
        **{f"distill/{name}": distill_experiment(name) for name in classification.GLUE_TASK_NAMES},
        "distill/text_classification": distill_experiment("custom"),
    },
)
