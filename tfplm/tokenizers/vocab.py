"""Learning vocabularies from text: WordPiece (tensorflow_text's learner) and SentencePiece."""

import os
import tempfile

import keras_nlp
import tensorflow as tf

from tfplm.tokenizers.wordpiece import SPECIAL_TOKENS


def build_wordpiece_vocab(texts, vocab_size, lowercase=True, reserved_tokens=SPECIAL_TOKENS):
    """Learns a BERT WordPiece vocabulary (tensorflow_text's bottom-up learner).

    Args:
        texts: an iterable of strings or a tf.data.Dataset of tf.string.
        vocab_size: target size (the learner may return slightly fewer tokens).
        lowercase: learn an uncased vocabulary (lower-case, strip accents).
        reserved_tokens: tokens placed first, in order; "[PAD]" must be id 0.

    Returns:
        list of tokens.
    """
    reserved_tokens = list(reserved_tokens)
    if reserved_tokens[:1] != ["[PAD]"]:
        raise ValueError("reserved_tokens must start with '[PAD]' (id 0 is padding)")
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    vocabulary = keras_nlp.tokenizers.compute_word_piece_vocabulary(
        texts.batch(1000),
        vocabulary_size=vocab_size,
        lowercase=lowercase,
        strip_accents=lowercase,
        reserved_tokens=reserved_tokens,
    )
    return list(vocabulary)


def train_sentencepiece(texts, vocab_size, output_prefix, model_type="unigram", **options):
    """Trains a SentencePiece model on `texts`; returns the `.model` path.

    Args:
        texts: an iterable of strings.
        vocab_size: the vocabulary size.
        output_prefix: where to write `<output_prefix>.model`.
        model_type: "unigram" or "bpe".
        **options: more `sentencepiece` trainer options.
    """
    import sentencepiece

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for line in texts:
                f.write(line.replace("\n", " ") + "\n")
        sentencepiece.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=output_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=2,
            **options,
        )
    return output_prefix + ".model"
