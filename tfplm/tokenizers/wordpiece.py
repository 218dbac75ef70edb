"""BERT's WordPiece tokenizer and input packer, in TensorFlow ops (tf.data and SavedModel)."""

import os

import keras
import tensorflow as tf
import tensorflow_text as tf_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_PATTERN = "|".join(r"\[" + token[1:-1] + r"\]" for token in SPECIAL_TOKENS)
# Control and format characters (but whitespace) and U+FFFD: BERT deletes them.
_CONTROL_PATTERN = r"[^\P{C}\t\n\r]|\x{FFFD}"
# Where BERT's basic tokenizer splits words: at whitespace (dropped), around
# punctuation (ASCII symbols and Unicode P*) and CJK ideographs (kept as words).
_WHITESPACE_PATTERN = r"\s|\p{Z}"
_PUNCTUATION_PATTERN = r"[!-/:-@\[-`{-~]|\p{P}"
_CJK_PATTERN = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}"
    r"\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
_KEPT_WORDS_PATTERN = f"{_SPECIAL_PATTERN}|{_PUNCTUATION_PATTERN}|{_CJK_PATTERN}"


def read_vocabulary(path):
    """The tokens of a vocab file, one per line; a clear error if it is unusable
    (missing, empty, or a token listed twice: the line numbers are named)."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"vocab file {path!r} does not exist; pass a vocab.txt with one token per line")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        tokens = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"vocab file {path!r}:{line}: not UTF-8 ({error.reason}); re-encode it as UTF-8") from None
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens:
        raise ValueError(f"vocab file {path!r} has 0 lines; expected one token per line")
    _check_unique(tokens, f"vocab file {path!r}", "lines", first=1)
    return tokens


def _check_unique(tokens, source, unit, first):
    seen = {}
    for i, token in enumerate(tokens, start=first):
        if token in seen:
            raise ValueError(
                f"{source} lists the token {token!r} twice ({unit} {seen[token]} and {i}); "
                "each token must appear once: remove one"
            )
        seen[token] = i


def check_bert_vocabulary(tokens, source="the vocabulary"):
    """A clear error for a token list BERT cannot use: empty, a token listed
    twice, a special token missing, or "[PAD]" other than id 0 (BERT's
    TFRecords, attention masks and checkpoints pad with id 0).

    Args:
        tokens: the vocabulary, id = index.
        source: how errors name it, e.g. "vocab file 'vocab.txt'".

    Example:
    >>> check_bert_vocabulary(["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    Traceback (most recent call last):
    ValueError: the vocabulary has '[PAD]' at id 1 (line 2); BERT pads with id 0, so '[PAD]' must come first
    """
    if not tokens:
        raise ValueError(f"{source} is empty; expected a list of tokens")
    _check_unique(tokens, source, "ids", first=0)
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"{source} lacks the special token(s) {missing}; BERT needs {list(SPECIAL_TOKENS)}")
    pad = tokens.index("[PAD]")
    if pad != 0:
        raise ValueError(
            f"{source} has '[PAD]' at id {pad} (line {pad + 1}); BERT pads with id 0, so '[PAD]' must come first"
        )


def clean_text(text):
    """Repairs invalid UTF-8 and deletes control characters (NUL included: some
    tensorflow_text ops would stop reading at it)."""
    text = tf_text.coerce_to_structurally_valid_utf8(text)
    return tf.strings.regex_replace(text, _CONTROL_PATTERN, "")


def normalize_bert_text(text, lowercase):
    """BERT's normalization of cleaned text (as Hugging Face's BertNormalizer).

    Maps whitespace to spaces and, for uncased vocabularies, strips accents
    (NFD, drop combining marks) and lower-cases. CJK characters and
    punctuation are split later by the WordPiece model.
    """
    text = tf.strings.regex_replace(text, r"\s", " ")
    if lowercase:
        text = tf_text.normalize_utf8(text, "NFD")
        text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        text = tf.strings.lower(text, encoding="utf-8")
    return text


@keras.saving.register_keras_serializable(package="tfplm")
class WordPieceTokenizer(keras.layers.Layer):
    """BERT's WordPiece tokenizer: normalization, punctuation/CJK splitting, WordPiece.

    Uses tensorflow_text's FastBertTokenizer for splitting and WordPiece, after
    the normalization BERT uses (`normalize_bert_text`). Special tokens such as
    "[MASK]" written in the text become their own ids, as in the reference
    tokenizer. Works eagerly, in tf.data and inside SavedModel graphs.

    Args:
        vocabulary: a vocab.txt path or a list of tokens (one id per line).
        lowercase: the vocabulary is uncased: lower-case and strip accents.

    Example:
    >>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
    ...     "[MASK]", "the", "cat", "##s"])
    >>> tokenizer(tf.constant(["The cats"])).to_list()
    [[5, 6, 7]]
    """

    def __init__(self, vocabulary=None, lowercase=True, **kwargs):
        kwargs.setdefault("dtype", "int32")
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.lowercase = lowercase
        self._vocabulary = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary):
        if isinstance(vocabulary, (str, os.PathLike)):
            tokens, source = read_vocabulary(vocabulary), f"vocab file {os.fspath(vocabulary)!r}"
        else:
            tokens, source = list(vocabulary), "the vocabulary"
        check_bert_vocabulary(tokens, source)
        self._vocabulary = tokens
        self._tflite_lowercase = None  # tokenize_tflite's tokenizer is built on first use
        self._token_to_id = {t: i for i, t in enumerate(tokens)}
        self._wordpiece = tf_text.FastBertTokenizer(
            vocab=tokens, token_out_type=tf.int32, unknown_token="[UNK]"
        )
        self._id_to_token_table = tf.constant(tokens)
        self._special_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                list(SPECIAL_TOKENS), [self._token_to_id[t] for t in SPECIAL_TOKENS], value_dtype=tf.int32
            ),
            default_value=-1,
        )

    def _check_vocabulary(self):
        if self._vocabulary is None:
            raise ValueError("this tokenizer has no vocabulary yet; pass `vocabulary=`")

    def get_vocabulary(self):
        self._check_vocabulary()
        return list(self._vocabulary)

    def vocabulary_size(self):
        self._check_vocabulary()
        return len(self._vocabulary)

    def token_to_id(self, token):
        if token not in self._token_to_id:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return self._token_to_id[token]

    def id_to_token(self, token_id):
        if not 0 <= token_id < self.vocabulary_size():
            raise ValueError(f"id {token_id} is outside the vocabulary [0, {self.vocabulary_size()})")
        return self._vocabulary[token_id]

    pad_token_id = property(lambda self: self.token_to_id("[PAD]"))
    unk_token_id = property(lambda self: self.token_to_id("[UNK]"))
    cls_token_id = property(lambda self: self.token_to_id("[CLS]"))
    sep_token_id = property(lambda self: self.token_to_id("[SEP]"))
    mask_token_id = property(lambda self: self.token_to_id("[MASK]"))

    def tokenize(self, strings):
        """tf.string [batch] → int32 RaggedTensor [batch, None]; a scalar → int32 [None]."""
        self._check_vocabulary()
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:
            return self.tokenize(strings[None])[0]
        # Special tokens typed in the text are matched before normalization.
        segments = tf_text.regex_split(clean_text(strings), _SPECIAL_PATTERN, _SPECIAL_PATTERN)
        pieces = segments.flat_values
        special_ids = self._special_table.lookup(pieces)
        is_special = special_ids >= 0
        ordinary = tf.where(is_special, "", normalize_bert_text(pieces, self.lowercase))
        ids = self._wordpiece.tokenize(ordinary)
        ids = ids.merge_dims(1, -1) if ids.ragged_rank > 1 else ids
        specials = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(special_ids, is_special), tf.cast(is_special, tf.int64)
        )
        ids = tf.concat([specials, ids], axis=1)
        return segments.with_flat_values(ids).merge_dims(1, 2)

    def tokenize_with_offsets(self, strings, unit="BYTE"):
        """`tokenize`, with where each piece's word is in the text.

        Words are split as BERT's basic tokenizer splits them (whitespace,
        punctuation, CJK ideographs; special tokens such as "[MASK]" stay whole),
        then each word is tokenized; so the ids equal `tokenize`'s on text
        without control characters. Every piece carries its word's offsets:
        pieces of one word share them, and the first piece of a word is the one
        whose start differs from the piece before it. Offsets index the text
        after invalid UTF-8 is repaired (`clean_text`: each bad byte becomes
        U+FFFD), which is the text itself when it is valid UTF-8.

        Args:
            strings: tf.string [batch].
            unit: "BYTE" (UTF-8 bytes, as `tf.strings.substr` counts) or
                "UTF8_CHAR" (characters, as a Python `str` counts).

        Returns:
            (ids, starts, ends): RaggedTensors [batch, None] of int32 ids and
            int64 offsets; the word of a piece is `text[start:end]`.

        Example:
        >>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
        ...     "[MASK]", "the", "cat", "##s", "."])
        >>> ids, starts, ends = tokenizer.tokenize_with_offsets(tf.constant(["Thé cats."]), unit="UTF8_CHAR")
        >>> ids.to_list(), starts.to_list(), ends.to_list()
        ([[5, 6, 7, 8]], [[0, 4, 4, 8]], [[3, 8, 8, 9]])
        """
        if unit not in ("BYTE", "UTF8_CHAR"):
            raise ValueError(f"unit={unit!r}; expected 'BYTE' or 'UTF8_CHAR'")
        self._check_vocabulary()
        text = tf_text.coerce_to_structurally_valid_utf8(tf.convert_to_tensor(strings, tf.string))
        words, starts, ends = tf_text.regex_split_with_offsets(
            text, f"{_WHITESPACE_PATTERN}|{_KEPT_WORDS_PATTERN}", _KEPT_WORDS_PATTERN
        )
        pieces = self.tokenize(words.flat_values)
        if unit == "UTF8_CHAR":
            starts, ends = (_char_offsets(text, offsets) for offsets in (starts, ends))
        pieces_per_word = pieces.row_lengths()

        def per_piece(values):
            return words.with_flat_values(pieces.with_flat_values(tf.repeat(values.flat_values, pieces_per_word)))

        ids = words.with_flat_values(pieces).merge_dims(1, 2)
        return ids, per_piece(starts).merge_dims(1, 2), per_piece(ends).merge_dims(1, 2)

    def call(self, strings):
        return self.tokenize(strings)

    def tokenize_tflite(self, strings):
        """`tokenize` with TFLite-convertible ops only: tf.string [batch] → int32 RaggedTensor [batch, None].

        tensorflow_text's FastBertTokenizer runs end to end with its own BERT
        normalization; it lowers to the TFLite custom ops `FastBertNormalize`
        and `FastWordpieceTokenizeWithOffsets` (registered by
        `tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`). The regex
        cleaning and special-token matching of `tokenize` have no TFLite
        kernels, so the ids differ from `tokenize`'s on text with control
        characters (a space here, deleted there), invalid UTF-8 or U+FFFD (the
        word becomes [UNK] here; those bytes are deleted there), special
        tokens typed as text ("[MASK]" is split into pieces here) and, for
        uncased vocabularies, characters its case folding maps differently
        ("…" becomes "...", "ς" becomes "σ", "ß" "ss", fullwidth letters and
        ligatures ASCII ones). Of 184,457 lines of real text (SST-2 train and
        dev, twelve Gutenberg books) 44 to 55 differed, all for "…" or "ς".
        """
        self._check_vocabulary()
        if self._tflite_lowercase != self.lowercase:
            with tf.init_scope():  # build once, eagerly, even when first called in a trace
                self._tflite_wordpiece = tf_text.FastBertTokenizer(
                    vocab=self._vocabulary,
                    token_out_type=tf.int32,
                    unknown_token="[UNK]",
                    lower_case_nfd_strip_accents=self.lowercase,
                )
            self._tflite_lowercase = self.lowercase
        return self._tflite_wordpiece.tokenize(tf.convert_to_tensor(strings, tf.string))

    def detokenize(self, ids):
        """Token ids (ragged or dense [batch, None]) → tf.string [batch], "##" pieces joined."""
        self._check_vocabulary()
        ids = ids if isinstance(ids, tf.RaggedTensor) else tf.convert_to_tensor(ids)
        tokens = tf.gather(self._id_to_token_table, ids)
        text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
        return tf.strings.regex_replace(text, " ##", "")

    def save_vocabulary(self, directory):
        """Writes vocab.txt into `directory`; returns [its path]."""
        path = os.path.join(directory, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.get_vocabulary()) + "\n")
        return [path]

    def save_assets(self, dir_path):
        self.save_vocabulary(dir_path)

    def load_assets(self, dir_path):
        self.set_vocabulary(os.path.join(dir_path, "vocab.txt"))

    def get_config(self):
        config = super().get_config()
        # The tokens are in the config, not only in a `.keras` file's vocab.txt
        # asset: a model's config alone rebuilds its preprocessing (from_config).
        config.update(lowercase=self.lowercase, vocabulary=self._vocabulary)
        return config


def _char_offsets(text, byte_offsets):
    """UTF-8 byte offsets into `text` [batch] (RaggedTensor [batch, None]) as character offsets."""
    _, char_starts = tf.strings.unicode_decode_with_offsets(text, "UTF-8")
    # A byte offset's character offset is the number of characters that start before it.
    counts = tf.searchsorted(
        char_starts.to_tensor(default_value=tf.int64.max), byte_offsets.to_tensor(), side="left", out_type=tf.int64
    )
    return tf.RaggedTensor.from_tensor(counts, lengths=byte_offsets.row_lengths())


def pack_segments(segments, seq_length, cls_token_id, sep_token_id, pad_token_id=0, pad_to_longest=False):
    """`[CLS] A [SEP] (B [SEP])`, trimmed round-robin to `seq_length` and padded.

    Args:
        segments: an int RaggedTensor [batch, None], or a list/tuple of one or two.
        pad_to_longest: pad to the batch's longest packed row (at most
            `seq_length`) instead of `seq_length`. The encoder's outputs at
            real tokens are the same (padding is masked out of attention);
            serving a 25-token sentence then costs 25 tokens, not 128.

    Returns:
        dict of int32 [batch, length]: `input_word_ids`, `input_mask`,
        `input_type_ids`; length is `seq_length`, or the longest row's.
    """
    if isinstance(segments, (tf.RaggedTensor, tf.Tensor)):
        segments = [segments]
    if not 1 <= len(segments) <= 2:
        raise ValueError(f"BERT packs 1 or 2 segments, got {len(segments)}")
    segments = [
        tf.cast(s if isinstance(s, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(s), tf.int32)
        for s in segments
    ]
    budget = seq_length - 1 - len(segments)
    trimmed = tf_text.RoundRobinTrimmer(max_seq_length=budget).trim(segments)
    ids, type_ids = tf_text.combine_segments(trimmed, cls_token_id, sep_token_id)
    if pad_to_longest:
        word_ids, mask = ids.to_tensor(pad_token_id), tf.ones_like(ids).to_tensor(0)
        type_ids = type_ids.to_tensor(0)
    else:
        word_ids, mask = tf_text.pad_model_inputs(ids, seq_length, pad_value=pad_token_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, seq_length, pad_value=0)
    # Keys in sorted order, like BertEncoder's inputs: Keras matches nested
    # dicts by their flattened order.
    return {
        "input_mask": tf.cast(mask, tf.int32),
        "input_type_ids": tf.cast(type_ids, tf.int32),
        "input_word_ids": tf.cast(word_ids, tf.int32),
    }


@keras.saving.register_keras_serializable(package="tfplm")
class BertPreprocessor(keras.layers.Layer):
    """Raw text (or text pairs) → BERT's encoder inputs: tokenize, then pack.

    Args:
        tokenizer: a `WordPieceTokenizer`.
        seq_length: length of the packed rows.
        pair: the model reads sentence pairs (its exports take `text` and
            `text_b`); calls may still pass one or two segments.

    Call args:
        text: tf.string [batch], or a tuple (text_a, text_b) for pair tasks.
        pad_to_longest: pad to the batch's longest row (at most `seq_length`),
            as serving signatures do, instead of to `seq_length`.

    Returns:
        dict of int32 [batch, seq_length] (or [batch, longest]):
        `input_word_ids`, `input_mask`, `input_type_ids`.
    """

    def __init__(self, tokenizer, seq_length=128, pair=False, **kwargs):
        kwargs.setdefault("dtype", "int32")
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.pair = pair

    def build(self, text_shape=None):
        self.built = True  # stateless: the tokenizer holds the vocabulary

    def call(self, text, pad_to_longest=False):
        texts = list(text) if isinstance(text, (tuple, list)) else [text]
        t = self.tokenizer
        return pack_segments(
            [t.tokenize(x) for x in texts],
            self.seq_length,
            t.cls_token_id,
            t.sep_token_id,
            t.pad_token_id,
            pad_to_longest=pad_to_longest,
        )

    def compute_output_spec(self, text, pad_to_longest=False):
        first = text[0] if isinstance(text, (tuple, list)) else text
        shape = (first.shape[0], None if pad_to_longest else self.seq_length)
        return {
            name: keras.KerasTensor(shape, dtype="int32")  # one distinct tensor per output
            for name in ("input_mask", "input_type_ids", "input_word_ids")
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            tokenizer=keras.saving.serialize_keras_object(self.tokenizer),
            seq_length=self.seq_length,
            pair=self.pair,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)
