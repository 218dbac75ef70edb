"""BERT's pretraining instances: tokenized documents → masked-LM + next-sentence pairs.

Instances follow google-research/bert's `create_pretraining_data.py` step for
step, drawing from a `random.Random` in the same order: a target length (10%
of the time a shorter one), chunks of whole sentences split into segments A and
B, B the actual continuation or (50%, and always for a one-sentence chunk)
sentences from another document, `truncate_seq_pair`, then 15% of the tokens
(at most `max_predictions_per_seq`, never [CLS]/[SEP]) chosen for prediction,
80% replaced by [MASK], 10% by a random token, 10% kept; optionally whole
words. `pretraining_records` writes them as its TFRecords; dynamic masking
(`masking`) takes the unmasked pairs (`InstanceMaker.segment_pairs`) and masks
them in the tf.data graph.
"""

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class PretrainingDataConfig:
    """The flags of `create_pretraining_data` (google-research/bert's defaults), also
    what `InstanceMaker` and `documents.tokenized_windows` read.

    Attributes:
        max_seq_length: tokens per instance, [CLS] and both [SEP]s included.
        max_predictions_per_seq: masked positions per instance, at most.
        masked_lm_prob: fraction of the tokens to predict.
        dupe_factor: passes over each window, each with different pairs and masks.
        short_seq_prob: probability of a random shorter target length.
        random_seed: the same seed gives the same bytes.
        do_whole_word_mask: mask all pieces of a word ("##" continuations) together.
        window_size: documents tokenized and turned into instances at a time;
            memory grows with it (times `dupe_factor`).
        cycle_length: input files read at a time, documents taken round robin.
        sentences_per_document: "prose" input only; see `documents.read_documents`.
    """

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    random_seed: int = 12345
    do_whole_word_mask: bool = False
    window_size: int = 200
    cycle_length: int = 8
    sentences_per_document: int = 40

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(
                f"max_seq_length={self.max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs at least 5"
            )
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq}; expected >= 1")
        if not 0 < self.masked_lm_prob <= 1:
            raise ValueError(f"masked_lm_prob={self.masked_lm_prob}; expected a fraction in (0, 1]")
        if not 0 <= self.short_seq_prob <= 1:
            raise ValueError(f"short_seq_prob={self.short_seq_prob}; expected a probability in [0, 1]")
        for name in ("dupe_factor", "window_size", "cycle_length", "sentences_per_document"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")


Instance = collections.namedtuple(
    "Instance", "input_ids segment_ids masked_lm_positions masked_lm_ids is_random_next"
)
Instance.__doc__ = """One training instance: token ids after masking ([CLS] A [SEP] B [SEP],
unpadded), segment ids, sorted masked positions with their original ids, and
whether B is a random segment (the NSP label 1)."""


class InstanceMaker:
    """Turns tokenized documents into masked-LM + NSP instances (BERT's algorithm).

    Every random draw is the original's, in the original's order, so the same
    documents and the same `random.Random` state give the same instances.

    Args:
        config: a `PretrainingDataConfig`.
        vocabulary: the tokenizer's vocabulary (list of tokens); it must hold
            [CLS], [SEP] and [MASK].

    Example:
    >>> import random
    >>> maker = InstanceMaker(PretrainingDataConfig(max_seq_length=16),
    ...     ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    >>> documents = [[[5, 6], [7, 5]], [[6, 6, 7]]]  # two documents of sentences
    >>> instances = maker.from_documents(documents, random.Random(0))
    >>> instances[0].input_ids[0] == maker.cls_id
    True
    """

    def __init__(self, config, vocabulary):
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in vocabulary]
        if missing:
            raise ValueError(f"the vocabulary lacks {missing}; BERT pretraining needs [CLS], [SEP] and [MASK]")
        self.config = config
        self.vocab_size = len(vocabulary)
        self.cls_id = vocabulary.index("[CLS]")
        self.sep_id = vocabulary.index("[SEP]")
        self.mask_id = vocabulary.index("[MASK]")
        self.is_subword = [token.startswith("##") for token in vocabulary]

    def from_documents(self, documents, rng):
        """All instances of a list of documents, as the original makes them for a corpus:
        shuffle the documents, `dupe_factor` passes over them, shuffle the instances."""
        documents = list(documents)
        rng.shuffle(documents)
        instances = []
        for _ in range(self.config.dupe_factor):
            for index in range(len(documents)):
                instances.extend(self.from_document(documents, index, rng))
        rng.shuffle(instances)
        return instances

    def from_document(self, documents, index, rng):
        """Instances of `documents[index]` (original: create_instances_from_document)."""
        return [
            self.make_instance(tokens_a, tokens_b, is_random_next, rng)
            for tokens_a, tokens_b, is_random_next in self.segment_pairs(documents, index, rng)
        ]

    def segment_pairs(self, documents, index, rng):
        """Yields (tokens_a, tokens_b, is_random_next) for `documents[index]`, truncated.

        Each document is a list of sentences, each a non-empty list of token ids.
        A generator: the caller's draws between pairs (the masking) keep the
        original's order of draws.
        """
        document = documents[index]
        max_num_tokens = self.config.max_seq_length - 3
        target_length = max_num_tokens
        if rng.random() < self.config.short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)
        chunk, chunk_length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                tokens_b = []
                is_random_next = len(chunk) == 1 or rng.random() < 0.5
                if is_random_next:
                    target_b_length = target_length - len(tokens_a)
                    # Ten tries for another document (one-document windows reuse their own).
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    random_document = documents[other]
                    start = rng.randint(0, len(random_document) - 1)
                    for sentence in random_document[start:]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                yield tokens_a, tokens_b, is_random_next
                chunk, chunk_length = [], 0
            i += 1

    def make_instance(self, tokens_a, tokens_b, is_random_next, rng):
        """[CLS] A [SEP] B [SEP] with masked-LM predictions (original: create_masked_lm_predictions)."""
        tokens = [self.cls_id, *tokens_a, self.sep_id, *tokens_b, self.sep_id]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        candidates = []
        for position, token in enumerate(tokens):
            if token == self.cls_id or token == self.sep_id:
                continue
            # As the original, a "##" piece joins the previous candidate, even across [SEP].
            if self.config.do_whole_word_mask and candidates and self.is_subword[token]:
                candidates[-1].append(position)
            else:
                candidates.append([position])
        rng.shuffle(candidates)
        num_to_predict = min(
            self.config.max_predictions_per_seq,
            max(1, int(round(len(tokens) * self.config.masked_lm_prob))),
        )
        output = list(tokens)
        masked = []  # (position, original id)
        for positions in candidates:
            if len(masked) >= num_to_predict:
                break
            if len(masked) + len(positions) > num_to_predict:
                continue  # a whole word that does not fit: try the next candidate
            for position in positions:
                if rng.random() < 0.8:
                    replacement = self.mask_id
                elif rng.random() < 0.5:
                    replacement = tokens[position]
                else:
                    replacement = rng.randint(0, self.vocab_size - 1)
                output[position] = replacement
                masked.append((position, tokens[position]))
        masked.sort()
        return Instance(
            output, segment_ids, [p for p, _ in masked], [t for _, t in masked], is_random_next
        )


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Removes tokens from the longer segment, at a random end, until both fit (in place)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
