"""Writes the synthetic CoNLL-2003-style files beside this script (invented
sentences and names; no CoNLL-2003 text): `word POS chunk NER`, IOB2 tags,
`-DOCSTART-` lines between documents, blank lines between sentences.

    python tests/data/conll_synthetic/make.py
"""

import os
import random

PEOPLE = ["Anna Berg", "Tomas Kell", "Mira Solte", "Jon", "Ilse Varn", "Petra Holm Ode", "Karel Dusk", "Eda"]
PLACES = ["Norvania", "Port Elling", "Kastow", "Lower Brenn", "Tarsk", "Oldmere"]
GROUPS = ["Kestrel Mining", "Orvo Bank", "Tarsk United", "Brenn Council", "Helio Works Group"]
OTHER = ["Norvanian", "Ellish", "Tarskian", "Brenn Cup", "Winter Games"]
DAYS = ["Monday", "Tuesday", "Friday", "Sunday"]

# (word, POS, chunk) of the words between entities; {PER} etc. are filled in.
TEMPLATES = [
    "{PER} visited {LOC} on {DAY} .",
    "{ORG} said {PER} would lead the {MISC} delegation .",
    "The {MISC} team beat {ORG} 3-1 in {LOC} .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "Shares in {ORG} rose 2.5 percent after the {MISC} report .",
    "{LOC} and {LOC} signed a trade accord on {DAY} .",
    "{PER} told reporters in {LOC} that {ORG} had won the {MISC} .",
    "Rain stopped play on {DAY} .",
    "{MISC} {MISC} fans gathered outside the stadium .",
    "{PER} met {PER} at the {ORG} offices in {LOC} .",
]
POS = {".": ".", ",": ",", "the": "DT", "The": "DT", "a": "DT", "and": "CC", "on": "IN", "in": "IN", "at": "IN",
       "for": "IN", "after": "IN", "that": "IN", "outside": "IN", "3-1": "CD", "2.5": "CD"}


def tagged_words(template, rng):
    words = []
    for token in template.split():
        pools = {"{PER}": ("PER", PEOPLE), "{LOC}": ("LOC", PLACES), "{ORG}": ("ORG", GROUPS), "{MISC}": ("MISC", OTHER)}
        if token in pools:
            kind, pool = pools[token]
            name = rng.choice(pool).split()
            words += [(w, "NNP", "B-NP" if i == 0 else "I-NP", ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(name)]
        elif token == "{DAY}":
            words.append((rng.choice(DAYS), "NNP", "B-NP", "O"))
        else:
            pos = POS.get(token, "VBD" if token.endswith("ed") else "NN")
            words.append((token, pos, "O" if pos in ".," else "B-VP" if pos == "VBD" else "B-NP", "O"))
    return words


def write(path, sentences, documents, rng):
    with open(path, "w") as f:
        for _ in range(documents):
            f.write("-DOCSTART- -X- -X- O\n\n")
            for _ in range(sentences // documents):
                for word in tagged_words(rng.choice(TEMPLATES), rng):
                    f.write(" ".join(word) + "\n")
                f.write("\n")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    rng = random.Random(2003)
    for name, sentences, documents in (("train.txt", 240, 8), ("valid.txt", 60, 2), ("test.txt", 60, 2)):
        write(os.path.join(here, name), sentences, documents, rng)
