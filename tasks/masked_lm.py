"""Masked-LM + next-sentence pretraining (`bert/pretraining`), and serving a
`BertPretrainer` as a fill-in-the-[MASK] model."""

import keras
import numpy as np
import tensorflow as tf

from tfplm import metrics
from tfplm.data import masking, pretraining_records
from tfplm.data.pipeline import per_replica_batch_size
from tfplm.models import BertEncoder, BertPretrainer, get_preset
from tfplm.tasks import base, serving
from tfplm.tasks.pretraining import PretrainingConfig, PretrainingTask
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer


class BertPretrainingTask(PretrainingTask):
    """Masked LM + next sentence prediction, as in BERT.

    Losses: MLM cross-entropy weighted by `masked_lm_weights` and averaged over
    the real predictions, plus NSP cross-entropy. Metrics: MLM accuracy and
    perplexity, NSP accuracy.
    """

    family = "bert"

    def tokenizer_from_vocab_file(self, path):
        return WordPieceTokenizer(path, self.task_config.lowercase)

    def build_model(self):
        seq_length = self.task_config.train_data.seq_length
        if self.checkpoint is not None:
            return BertPretrainer.from_pretrained(self.checkpoint, seq_length=seq_length)
        model_config = self.task_config.model
        get_preset(model_config.preset, "bert")
        vocab_size = model_config.vocab_size or self.tokenizer.vocabulary_size()
        encoder = BertEncoder.from_preset(model_config.preset, **model_config.overrides(vocab_size))
        return BertPretrainer(encoder, preprocessor=BertPreprocessor(self.tokenizer, seq_length))

    def build_inputs(self, split, input_context=None):
        data = self._data(split)
        batch_size = per_replica_batch_size(self.global_batch_size(split), input_context)
        is_training = split == "train"
        if data.input_format == "tfrecord":
            dataset = pretraining_records.bert_pretraining_dataset(
                data.input_path,
                data.seq_length,
                data.max_predictions_per_seq,
                batch_size,
                is_training,
                input_context=input_context,
                shuffle_buffer_size=data.shuffle_buffer_size,
                seed=self.config.runtime.seed,
            )
        else:
            dataset = masking.dynamic_masking_dataset(
                data.input_path,
                self.tokenizer,
                data.seq_length,
                data.max_predictions_per_seq,
                batch_size,
                is_training,
                input_format=data.input_format,
                input_context=input_context,
                seed=self.config.runtime.seed or 0,
                shuffle_buffer_size=data.shuffle_buffer_size,
            )
        return dataset.map(self.to_keras)

    @staticmethod
    def to_keras(features, labels):
        """(features, labels) → Keras's (x, y, sample_weight) keyed by output name."""
        y = {"mlm_logits": labels["masked_lm_ids"], "nsp_logits": labels["next_sentence_labels"]}
        sample_weight = {
            "mlm_logits": labels["masked_lm_weights"],
            "nsp_logits": keras.ops.ones_like(labels["next_sentence_labels"], dtype="float32"),
        }
        return features, y, sample_weight

    def build_losses(self):
        return {
            "mlm_logits": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight", name="mlm_loss"
            ),
            "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="nsp_loss"),
        }

    def build_metrics(self):
        return {
            "mlm_logits": [
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                metrics.Perplexity(name="perplexity"),
            ],
            "nsp_logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }


def mask_a_word(texts):
    """Texts without "[MASK]" get their middle word replaced by it (for export reports)."""
    masked = []
    for text in texts:
        words = text.split()
        if "[MASK]" not in text and words:
            words[len(words) // 2] = "[MASK]"
            text = " ".join(words)
        masked.append(text)
    return masked


class MaskedLMHead(serving.BertTextHead):
    """Serves a `BertPretrainer` as a masked LM: for every `[MASK]` in the text,
    the `top_k` predictions: `top_k_ids`, `top_k_tokens`, `top_k_probabilities`,
    with `masked_positions` (-1 where a row has fewer masks)."""

    main_output = "top_k_probabilities"
    top_k = 5

    def __init__(self, model):
        super().__init__(model)
        tokenizer = model.tokenizer
        self.mask_token_id = tokenizer.mask_token_id
        self.vocabulary = tf.constant(tokenizer.get_vocabulary())

    def outputs(self, packed):
        ids = packed["input_word_ids"]
        is_mask = tf.equal(ids, self.mask_token_id)
        positions = tf.ragged.boolean_mask(tf.broadcast_to(tf.range(tf.shape(ids)[1]), tf.shape(ids)), is_mask)
        valid = tf.ones_like(positions, tf.bool).to_tensor(False)
        # Rows with fewer masks gather position 0 ([CLS]) and are blanked out below.
        inputs = {**packed, "masked_lm_positions": positions.to_tensor(0)}
        logits = self.model(inputs, training=False)["mlm_logits"]
        probabilities, top_ids = tf.math.top_k(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), k=self.top_k)
        valid_k = tf.broadcast_to(valid[:, :, None], tf.shape(top_ids))
        top_ids = tf.where(valid_k, top_ids, -1)
        return {
            "top_k_ids": top_ids,
            "top_k_tokens": tf.where(valid_k, tf.gather(self.vocabulary, tf.maximum(top_ids, 0)), ""),
            "top_k_probabilities": tf.where(valid_k, probabilities, 0.0),
            "masked_positions": positions.to_tensor(-1),
        }

    def report_examples(self, examples):
        return {**examples, "text": mask_a_word(examples["text"])}

    def compare(self, reference, outputs):
        result = super().compare(reference, outputs)
        same = np.asarray(reference["top_k_ids"])[..., 0] == np.asarray(outputs["top_k_ids"])[..., 0]
        result["agreement"] = float(np.mean(same)) if same.size else 1.0
        return result

    def tflite_function(self, flavour, seq_length=None):
        # Its string outputs (top_k_tokens) and ragged mask positions have no TFLite form yet.
        raise serving.UnsupportedExport(
            f"TFLite export covers BertClassifier and BertEncoder, not a {type(self.model).__name__}; "
            "export a SavedModel"
        )


def bert_pretraining_experiment():
    return base.ExperimentConfig(task=PretrainingConfig())


TASK_TYPE = base.TaskType(
    name="masked_lm",
    task=BertPretrainingTask,
    serving=MaskedLMHead,
    models=(BertPretrainer,),
    experiments={"bert/pretraining": bert_pretraining_experiment},
)
