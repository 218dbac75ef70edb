"""Documents from text files, streamed in windows and tokenized a window at a time.

A document is a list of sentences (strings). `read_documents` reads them in
google-research/bert's format (a sentence per line, blank lines between
documents) or from running prose; `interleave_documents` takes them from
several files round robin; `tokenized_windows` cuts the stream into windows of
documents and tokenizes each window in one batch. The BERT pretraining writer
(`pretraining_records`) and dynamic masking (`masking`) both read their
documents this way, so memory stays bounded by the window, not the corpus.
"""

import itertools

import tensorflow as tf

from tfplm.data import text as text_lib


def check_input_format(input_format):
    """A clear error for an input format other than "bert" or "prose"."""
    if input_format not in ("bert", "prose"):
        raise ValueError(f"input_format={input_format!r}; expected 'bert' or 'prose'")


def read_documents(files, input_format="bert", sentences_per_document=40):
    """Yields documents, as lists of sentences (strings), file after file.

    Args:
        files: text files (UTF-8; a BOM is ignored). Bytes that are not UTF-8
            are an error naming the file and line (`text.read_utf8`): decoding them
            as U+FFFD would silently drop words.
        input_format: "bert": one sentence per line, blank lines between
            documents (google-research/bert's format). "prose": running text
            such as Project Gutenberg books (BOM, header and licence removed):
            paragraphs are split into sentences and consecutive paragraphs are
            grouped into documents of about `sentences_per_document` sentences.
            Paragraphs alone would be poor documents: many are one line of
            dialogue, and a one-sentence chunk always takes a random next
            segment, while a whole book as one document leaves no "other
            document" nearby to draw random segments from. Runs of ~40
            sentences fill 128-token pairs with coherent actual-next text, and
            random segments then come from elsewhere (usually another book,
            see `interleave_documents`).
        sentences_per_document: see "prose".

    Example:
    >>> for document in read_documents(["wiki.txt"]):  # doctest: +SKIP
    ...     print(len(document), "sentences")
    """
    check_input_format(input_format)
    for path in files:
        if input_format == "bert":
            yield from _bert_format_documents(path)
        else:
            yield from _prose_documents(path, sentences_per_document)


def paragraphs(files):
    """Every paragraph of the files (prose, see `text.paragraphs`), cleaned of a BOM and
    Gutenberg boilerplate; bytes that are not UTF-8 are an error naming the file and line."""
    for path in files:
        yield from text_lib.paragraphs(text_lib.read_text(path))


def _bert_format_documents(path):
    document = []
    for line in text_lib.utf8_lines(path):
        line = line.strip()
        if line:
            document.append(line)
        elif document:
            yield document
            document = []
    if document:
        yield document


def _prose_documents(path, sentences_per_document):
    document = []
    for paragraph in paragraphs([path]):
        document.extend(text_lib.split_sentences(paragraph))
        if len(document) >= sentences_per_document:
            yield document
            document = []
    if document:
        yield document


def interleave_documents(files, input_format="bert", cycle_length=8, sentences_per_document=40):
    """Documents of up to `cycle_length` files at a time, taken round robin.

    Like `tf.data.Dataset.interleave` with `block_length=1`: a file that runs
    out is replaced, in its slot, by the next file. Deterministic.
    """
    pending = iter(files)

    def open_next():
        path = next(pending, None)
        return None if path is None else read_documents([path], input_format, sentences_per_document)

    slots = [reader for reader in (open_next() for _ in range(cycle_length)) if reader is not None]
    while slots:
        for k in range(len(slots)):
            while slots[k] is not None:
                document = next(slots[k], None)
                if document is not None:
                    yield document
                    break
                slots[k] = open_next()  # an empty file yields nothing: try the next one
        slots = [reader for reader in slots if reader is not None]


def _windows(documents, window_size):
    iterator = iter(documents)
    while True:
        window = list(itertools.islice(iterator, window_size))
        if not window:
            return
        yield window


def tokenize_window(tokenizer, window):
    """Documents of sentences → documents of token-id lists, in one tokenizer call.

    Sentences without tokens and documents without sentences are dropped, as
    google-research/bert drops them.
    """
    sentences = [s for document in window for s in document]
    if not sentences:
        return []
    ids = tokenizer.tokenize(tf.constant(sentences, tf.string))
    flat, splits = ids.flat_values.numpy().tolist(), ids.row_splits.numpy().tolist()
    documents, k = [], 0
    for document in window:
        tokenized = [flat[splits[j] : splits[j + 1]] for j in range(k, k + len(document))]
        k += len(document)
        tokenized = [s for s in tokenized if s]
        if tokenized:
            documents.append(tokenized)
    return documents


def tokenized_windows(files, tokenizer, input_format, config, keep=None):
    """Yields (window index, tokenized documents) for the windows `keep(index)` accepts.

    Args:
        files: text files, in order.
        tokenizer: has `tokenize` (strings → ragged ids).
        input_format: "bert" or "prose" (see `read_documents`).
        config: gives `window_size`, `cycle_length` and `sentences_per_document`
            (a `bert_instances.PretrainingDataConfig`).
        keep: a predicate on window indices; windows it rejects are not
            tokenized. None keeps every window.
    """
    documents = interleave_documents(files, input_format, config.cycle_length, config.sentences_per_document)
    for index, window in enumerate(_windows(documents, config.window_size)):
        if keep is None or keep(index):
            yield index, tokenize_window(tokenizer, window)
