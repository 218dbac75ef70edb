"""Reading raw text: Project Gutenberg clean-up, documents, sentences."""

import glob
import re

# Project Gutenberg wraps every book in a header and a licence:
#   *** START OF THE PROJECT GUTENBERG EBOOK EMMA ***  ...  *** END OF THE ...
_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE )?PROJECT GUTENBERG'?S?).*$", re.M | re.I
)
# A sentence ends at . ! or ? (possibly followed by closing quotes/brackets) and a space.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]*[A-Z0-9])")
_ABBREVIATIONS = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|Mme|Mlle|Messrs|Capt|Col|Gen|Rev|Prof|vs|etc|i\.e|e\.g)\.$")


def strip_gutenberg(text):
    """Removes a UTF-8 BOM and a Project Gutenberg header and licence, if present."""
    text = text.lstrip("\ufeff")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def read_utf8(path):
    """A text file's contents, without a byte-order mark.

    Raises:
        ValueError: naming the file and line of the first bytes that are not
            UTF-8, and how to fix it (decoding them as U+FFFD would silently
            drop words).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise not_utf8(path, data[: error.start].count(b"\n") + 1, error) from None


def utf8_lines(path):
    """The lines of a UTF-8 text file, one at a time, without a byte-order mark
    or line ends; bytes that are not UTF-8 are an error as in `read_utf8`."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise not_utf8(path, number, error) from None


def not_utf8(path, line, error):
    return ValueError(
        f"{path}:{line}: not UTF-8 ({error.reason}: {error.object[error.start:error.end]!r}); "
        "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


def read_text(path):
    """A UTF-8 text file's contents without BOM or Gutenberg boilerplate."""
    return strip_gutenberg(read_utf8(path))


def expand_files(pattern):
    """Sorted files matching a glob (or comma-separated globs); an error if none."""
    files = sorted({f for p in pattern.split(",") for f in glob.glob(p.strip())})
    if not files:
        raise ValueError(f"no files match {pattern!r}")
    return files


def paragraphs(text):
    """Blank-line-separated blocks of `text`, each joined into one line."""
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        if line:
            yield line


def split_sentences(paragraph):
    """A paragraph of prose split into sentences (a rule-based splitter for English)."""
    sentences, current = [], ""
    for piece in _SENTENCE_END.split(paragraph):
        current = f"{current} {piece}".strip() if current else piece.strip()
        if not _ABBREVIATIONS.search(current):
            sentences.append(current)
            current = ""
    if current:
        sentences.append(current)
    return [s for s in sentences if s]


def iter_lines(files):
    """Every non-empty line (a paragraph for prose files) of the files, cleaned."""
    for path in files:
        yield from paragraphs(read_text(path))
