"""Text encoders and sentence embeddings: serving a `BertEncoder` or a `BertSimilarity`.

Every BERT encoder serves sentence embeddings, pooled the way its checkpoint
was trained (`BertEncoder.pooling`: mean + L2 norm for sentence-transformers
checkpoints such as all-MiniLM-L6-v2, read from their `modules.json`; BERT's
pooled [CLS] output otherwise):

* `embed`: `text` → `embedding` [batch, hidden];
* `similarity`: `text_a`, `text_b` → `similarity` [batch], the cosine of their embeddings;
* TFLite: text → `embedding` (batch 1, static `seq_length`).

An encoder's `serving_default` also returns `pooled_output` and
`sequence_output`; a `BertSimilarity` (trained by `tasks/similarity.py`)
serves the embedding as `serving_default`.

    head = tfplm.tasks.serving_head(BertEncoder.from_pretrained(MINILM))
    head.signatures()["similarity"](text_a=tf.constant(["a cat"]), text_b=tf.constant(["a kitten"]))
"""

import numpy as np
import tensorflow as tf

from tfplm.models import BertEncoder, BertSimilarity
from tfplm.tasks import base, serving


def cosine(a, b):
    """Row-wise cosine similarity of two float batches [batch, hidden] (tf ops)."""
    return tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1)


def compare_embeddings(expected, actual):
    """How well an artifact's embeddings agree with the Keras model's, both [batch, hidden] numpy.

    Returns:
        {"max_abs_diff", "agreement": the fraction of texts whose own Keras
        embedding is the nearest (by cosine, ties included) of all the
        texts' Keras embeddings to the artifact's embedding: retrieval
        agreement, "min_cosine": the lowest cosine between an artifact's
        embedding and the Keras one of the same text}.
    """
    if actual.shape != expected.shape:
        raise ValueError(f"embedding: shape {actual.shape} differs from the Keras model's {expected.shape}")
    if not expected.size:
        return {"max_abs_diff": 0.0, "agreement": None, "min_cosine": None}

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    similarities = unit(actual.astype(np.float64)) @ unit(expected.astype(np.float64)).T
    own = np.diag(similarities)
    return {
        "max_abs_diff": float(np.abs(actual - expected).max()),
        "agreement": float(np.mean(own >= similarities.max(axis=1) - 1e-6)),
        "min_cosine": float(own.min()),
    }


class EmbeddingHead(serving.BertTextHead):
    """Serves sentence embeddings: `serving_default` (text → `embedding`),
    `similarity` (text_a, text_b → cosine), TFLite text → `embedding`.

    Args:
        model: a `BertSimilarity`, or a `BertEncoder` (its own pooling).
    """

    main_output = "embedding"

    def __init__(self, model):
        super().__init__(model)
        if self.preprocessor.pair:
            raise ValueError("sentence embeddings pack one text at a time; give the model a single-text BertPreprocessor")
        with serving.untracked(self):  # its variables are the model's, tracked already
            self.encoder = model.encoder if isinstance(model, BertSimilarity) else model

    def outputs(self, packed):
        return {"embedding": self.encoder.embed(packed, training=False)}

    def similarity(self, text_a, text_b):
        """{"similarity": the cosine of the two texts' embeddings, float32 [batch]}."""
        return {"similarity": cosine(self.predict(text=text_a)["embedding"], self.predict(text=text_b)["embedding"])}

    def signatures(self):
        signatures = super().signatures()
        similarity = tf.function(self.similarity, input_signature=[serving.string_spec("text_a"), serving.string_spec("text_b")])
        signatures["similarity"] = similarity.get_concrete_function()
        return signatures

    def warmup_inputs(self, examples):
        inputs = super().warmup_inputs(examples)
        text = inputs["serving_default"]["text"]
        inputs["similarity"] = {"text_a": text, "text_b": text[::-1].copy()}
        return inputs

    def describe(self):
        return {**super().describe(), "pooling": self.encoder.pooling, "normalize": self.encoder.normalize}

    def compare(self, reference, outputs):
        return compare_embeddings(np.asarray(reference["embedding"]), np.asarray(outputs["embedding"]))


class EncoderHead(serving.BertTextHead):
    """Serves a `BertEncoder`: raw text (or pairs, for a pair preprocessor) in;
    `serving_default` returns `pooled_output` [batch, hidden], `sequence_output`
    [batch, length, hidden] (length: the request's longest packed text, at most
    `seq_length`; TFLite: `seq_length`) and `embedding` (the packed input pooled
    as `BertEncoder.pooling` says). A single-text encoder also serves `embed`
    (text → `embedding` alone) and `similarity` (text_a, text_b → cosine)."""

    main_output = "embedding"

    def __init__(self, model):
        super().__init__(model)
        with serving.untracked(self):  # its variables are the model's, tracked already
            self.encoder = model
        # `embed` and `similarity` chunk over embeddings only, not every token's outputs.
        self.embedding_head = None if self.preprocessor.pair else EmbeddingHead(model)

    def outputs(self, packed):
        outputs = self.encoder(packed, training=False)
        embedding = self.encoder.sentence_pooling(outputs["sequence_output"], outputs["pooled_output"], packed["input_mask"])
        outputs = {name: tf.cast(outputs[name], tf.float32) for name in ("pooled_output", "sequence_output")}
        return {**outputs, "embedding": embedding}

    def describe(self):
        return {**super().describe(), "pooling": self.encoder.pooling, "normalize": self.encoder.normalize}

    def signatures(self):
        signatures = super().signatures()
        if self.embedding_head is not None:
            embedding_signatures = self.embedding_head.signatures()
            signatures["embed"] = embedding_signatures["serving_default"]
            signatures["similarity"] = embedding_signatures["similarity"]
        return signatures

    def warmup_inputs(self, examples):
        inputs = super().warmup_inputs(examples)
        if self.embedding_head is not None:
            embedding_inputs = self.embedding_head.warmup_inputs(examples)
            inputs["embed"] = embedding_inputs["serving_default"]
            inputs["similarity"] = embedding_inputs["similarity"]
        return inputs

    def compare(self, reference, outputs):
        if "embedding" not in outputs:  # a TF Hub export: BERT's outputs only, judged on pooled_output
            expected, actual = np.asarray(reference["pooled_output"]), np.asarray(outputs["pooled_output"])
            return {"max_abs_diff": float(np.abs(actual - expected).max()), "agreement": None}
        return compare_embeddings(np.asarray(reference["embedding"]), np.asarray(outputs["embedding"]))


TASK_TYPE = base.TaskType(name="encoder", task=None, serving=EncoderHead, models=(BertEncoder,))
