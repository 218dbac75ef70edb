"""Learning vocabularies from text: WordPiece (tensorflow_text's learner) and SentencePiece."""

import os
import shutil
import tempfile

import keras_nlp
import tensorflow as tf

from tfplm import publish
from tfplm.tokenizers.wordpiece import SPECIAL_TOKENS


def build_wordpiece_vocab(texts, vocab_size, lowercase=True, reserved_tokens=SPECIAL_TOKENS):
    """Learns a BERT WordPiece vocabulary (tensorflow_text's bottom-up learner).

    Args:
        texts: an iterable of strings or a tf.data.Dataset of tf.string.
        vocab_size: target size, more than the reserved tokens (the learner
            may return slightly fewer tokens).
        lowercase: learn an uncased vocabulary (lower-case, strip accents).
        reserved_tokens: tokens placed first, in order; "[PAD]" must be id 0.

    Returns:
        list of tokens.

    Raises:
        ValueError: for a `vocab_size` that leaves no room for learned
            tokens, or `texts` without any word.
    """
    reserved_tokens = list(reserved_tokens)
    if reserved_tokens[:1] != ["[PAD]"]:
        raise ValueError("reserved_tokens must start with '[PAD]' (id 0 is padding)")
    if vocab_size <= len(reserved_tokens):
        raise ValueError(
            f"vocab_size={vocab_size}; expected more than the {len(reserved_tokens)} reserved tokens "
            f"{reserved_tokens} (BERT's vocabularies have 30522)"
        )
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    try:
        vocabulary = keras_nlp.tokenizers.compute_word_piece_vocabulary(
            texts.batch(1000),
            vocabulary_size=vocab_size,
            lowercase=lowercase,
            strip_accents=lowercase,
            reserved_tokens=reserved_tokens,
        )
    except StopIteration:  # the learner's way of saying it counted no word
        raise ValueError("no words to learn a vocabulary from: the texts are empty") from None
    return list(vocabulary)


def train_sentencepiece(texts, vocab_size, output_prefix, model_type="unigram", **options):
    """Trains a SentencePiece model on `texts`; returns the `.model` path.

    `<output_prefix>.model` and `.vocab` are published atomically
    (`tfplm.publish`): a failed or killed run leaves neither.

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
        if not os.path.getsize(corpus):
            raise ValueError("no text to learn a SentencePiece model from: the texts are empty")
        try:
            sentencepiece.SentencePieceTrainer.train(
                input=corpus,
                model_prefix=os.path.join(tmp, "spm"),
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=0,
                unk_id=1,
                bos_id=-1,
                eos_id=2,
                **{"minloglevel": 1, **options},  # warnings (e.g. skipped long lines) but no INFO dump
            )
        except RuntimeError as error:  # e.g. a vocab_size the text cannot fill, or too small for its characters
            raise ValueError(f"SentencePiece cannot train with vocab_size={vocab_size} on these texts: {error}") from None
        for suffix in (".vocab", ".model"):  # the .model last: it is what readers look for
            with publish.file(output_prefix + suffix) as published:
                shutil.copyfile(os.path.join(tmp, "spm" + suffix), published)
    return output_prefix + ".model"
