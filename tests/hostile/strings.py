"""A deterministic corpus of hostile strings for everything that takes raw text.

    from hostile.strings import hostile_strings   # tests/ is on sys.path under pytest
    corpus = hostile_strings()           # 1,023 byte strings, the same on every machine

Every entry is `bytes` (some are not valid UTF-8). The first ones are written
by hand, one per class of trouble (`HANDWRITTEN`); the rest are drawn with a
fixed seed from the same pools: words, compatibility characters, special
tokens typed as text, control and format characters, combining marks, CJK,
emoji, right-to-left scripts and raw bytes, glued with and without spaces.
Nothing here depends on Python's hash seed or on the platform.

Classes (`CLASSES`, each a list of byte strings):

* empty and whitespace only (ASCII, Unicode spaces, zero-width characters);
* long: 100 KB of words, one 100 KB word, 20,000 emoji;
* invalid UTF-8: lone continuation bytes, truncated and overlong sequences,
  encoded surrogates, 0xFE/0xFF, random bytes;
* control and format characters: NUL, C0/C1 controls, DEL, bidi overrides,
  soft hyphen, BOM, U+FFFD;
* Unicode compatibility characters: ligatures, fullwidth letters and digits,
  mathematical letters, titlecase digraphs (ǅ), superscripts, fractions,
  circled and Roman numerals, units, the Kelvin and Ångström signs, "…";
* case mappings that differ between libraries: ß, ς, İ, ı, ǰ, ŉ, Cherokee;
* combining marks: accents, stacked marks ("Zalgo"), Hangul jamo, Indic;
* CJK, emoji (skin tones, ZWJ sequences, flags, keycaps), Arabic, Hebrew;
* special tokens typed as text: "[SEP]", "[CLS] a [SEP] b", "[mask]", "##ing".
"""

import random

SIZE = 1023
SEED = 12

WORDS = (
    "the", "a", "film", "movie", "good", "bad", "gorgeous", "witty", "dull", "tedious", "not", "very",
    "story", "actors", "plot", "ending", "it", "is", "was", "and", "but", "funny", "boring", "great",
)
SPACES = (" ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\u200b", "\ufeff", "\u180e")
CONTROLS = ("\x00", "\x01", "\x07", "\x1b", "\x7f", "\x80", "\x9f", "\u00ad", "\u200d", "\u200e", "\u202e", "\u2066", "\ufffd", "\ufff9")
COMPATIBILITY = (
    "\ufb01", "\ufb02", "\ufb00", "\ufb03", "\ufb05", "\u0132", "\u01c4", "\u01c5", "\u01c6", "\u01c8", "\u01cb",  # ﬁ ﬂ ﬀ ﬃ ﬅ Ĳ Ǆ ǅ ǆ ǈ ǋ
    "\uff21\uff22\uff23", "\uff41\uff42", "\uff11\uff12\uff13", "\uff01", "\uff08\uff09",  # ＡＢＣ ａｂ １２３ ！ （）
    "\U0001d400\U0001d401", "\U0001d538", "\U0001d7d9", "\U0001d4b6", "\U0001d586",  # 𝐀𝐁 𝔸 𝟙 𝒶 𝖆
    "\u00b2", "\u2075", "\u2082", "\u00bd", "\u2153", "\u2460", "\u2473", "\u2163", "\u216b", "\u2170",  # ² ⁵ ₂ ½ ⅓ ① ⑳ Ⅳ Ⅻ ⅰ
    "\u3392", "\u338f", "\u2103", "\u2109", "\u212a", "\u212b", "\u2126", "\u2122", "\u00aa", "\u00ba",  # ㎒ ㎏ ℃ ℉ K Å Ω ™ ª º
    "\u2026", "\u2025", "\u00b5", "\u017f", "\u1e9b", "\u03d0", "\u03f5", "\u2024", "\ufe50", "\uff0c",  # … ‥ µ ſ ẛ ϐ ϵ ․ ﹐ ，
)
CASE = ("\u00df", "\u1e9e", "\u03c2", "\u03a3", "\u0130", "\u0131", "\u01f0", "\u0149", "\u13a0", "\uab70", "\u0587", "\ufb13")
COMBINING = ("e\u0301", "n\u0303", "a\u0308\u0304", "Z\u0351\u0352\u0353\u0354\u0355\u0356", "\u1100\u1161\u11a8", "\u0915\u094d\u0937", "\u0e01\u0e34\u0e48")
SCRIPTS = (
    "日本語の映画", "很好看的电影", "영화가 좋다", "фильм хороший", "ταινία", "فيلم جيد", "סרט טוב", "ภาพยนตร์",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "1\ufe0f\u20e3", "🏳\ufe0f\u200d🌈", "\U0001f9d1\U0001f3ff\u200d\U0001f52c",
)
SPECIAL = (
    "[SEP]", "[CLS]", "[MASK]", "[PAD]", "[UNK]", "[sep]", "[mask]", "[ SEP ]", "[SEP][SEP]", "[[SEP]]",
    "[CLS] a film [SEP] a movie", "##ing", "##", "[", "]", "[]", "<s>", "</s>", "<|endoftext|>", "[unused1]",
)
BAD_BYTES = (
    b"\x80", b"\xbf", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xfe", b"\xff", b"\xff\xfe", b"\xef\xbb\xbf",
)


def _encode(items):
    return [item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass") for item in items]


HANDWRITTEN = {
    "empty and whitespace": _encode(["", " ", "   ", "\t\n\r", *SPACES, "".join(SPACES), " \u200b \ufeff "]),
    "long": _encode(["a gorgeous film " * 6250, "x" * 100_000, "😀" * 20_000, "[SEP]" * 20_000]),
    "invalid utf-8": [b"bad " + b + b" bytes" for b in BAD_BYTES] + [bytes(range(256)), bytes(range(255, -1, -1))],
    "control and format": _encode([f"a{c}film" for c in CONTROLS] + ["\x00", "film\x00", "".join(CONTROLS)]),
    "compatibility": _encode([f"the {c} film" for c in COMPATIBILITY] + ["".join(COMPATIBILITY), "\ufb01lm \u01c5ungla"]),
    "case mappings": _encode([f"{c} film" for c in CASE] + ["STRASSE stra\u00dfe", "\u0130stanbul \u0131"]),
    "combining marks": _encode([f"caf{c} film" for c in COMBINING] + ["e" + "\u0301" * 300, "\u0301 leading mark"]),
    "scripts and emoji": _encode([f"{s} film" for s in SCRIPTS] + ["".join(SCRIPTS), "\u202eflim a\u202c"]),
    "special tokens as text": _encode([f"a {s} film" for s in SPECIAL] + [s for s in SPECIAL] + ["".join(SPECIAL)]),
}
CLASSES = dict(HANDWRITTEN)


def _random_piece(rng):
    pool = rng.choice(("word", "word", "word", "space", "control", "compat", "case", "combining", "script", "special", "bytes"))
    if pool == "word":
        word = rng.choice(WORDS)
        return (word.upper() if rng.random() < 0.2 else word).encode()
    if pool == "bytes":
        return rng.choice(BAD_BYTES) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    source = {"space": SPACES, "control": CONTROLS, "compat": COMPATIBILITY, "case": CASE,
              "combining": COMBINING, "script": SCRIPTS, "special": SPECIAL}[pool]
    return rng.choice(source).encode("utf-8")


def hostile_strings(size=SIZE, seed=SEED):
    """`size` byte strings: every handwritten case, then random mixtures (same `seed`, same list).

    Args:
        size: how many strings (at least the handwritten ones are returned).
        seed: the seed of the random part.

    Returns:
        A list of `bytes`.
    """
    corpus = [text for texts in HANDWRITTEN.values() for text in texts]
    rng = random.Random(seed)
    while len(corpus) < size:
        pieces = [_random_piece(rng) for _ in range(rng.randrange(1, 12))]
        glue = rng.choice((b" ", b"", b" ", b"\t"))
        corpus.append(glue.join(pieces))
    return corpus[: max(size, sum(len(t) for t in HANDWRITTEN.values()))]


def class_of(index):
    """The class name of `hostile_strings()[index]` ("random" past the handwritten ones)."""
    for name, texts in HANDWRITTEN.items():
        if index < len(texts):
            return name
        index -= len(texts)
    return "random"
