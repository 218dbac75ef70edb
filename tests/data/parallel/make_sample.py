"""Writes the synthetic German-English sample of this folder (made up, not Multi30k).

Sentences are drawn from a small grammar whose German and English sides
translate word for word (with German's adjective agreement), so a tiny model
learns them in seconds:

    python tests/data/parallel/make_sample.py
"""

import gzip
import os
import random

SUBJECTS = [("ein mann", "a man"), ("eine frau", "a woman"), ("ein kind", "a child"), ("ein hund", "a dog"),
            ("zwei männer", "two men"), ("eine gruppe", "a group"), ("ein mädchen", "a girl"), ("ein junge", "a boy")]
VERBS = [("fährt", "rides"), ("sieht", "sees"), ("trägt", "carries"), ("hält", "holds"), ("sucht", "looks for")]
OBJECTS = [("ein fahrrad", "a bike"), ("einen ball", "a ball"), ("ein buch", "a book"), ("einen hut", "a hat"),
           ("eine tasche", "a bag"), ("ein boot", "a boat")]
ADJECTIVES = [("rotes", "red"), ("großes", "big"), ("altes", "old"), ("kleines", "small"), ("blaues", "blue")]
PLACES = [("im park", "in the park"), ("am strand", "on the beach"), ("auf der straße", "on the street"), ("", "")]


def pair(rng):
    (sde, sen), (vde, ven), (ode, oen), (ade, aen), (pde, pen) = (
        rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ADJECTIVES), rng.choice(PLACES))
    if rng.random() < 0.5:  # an adjective before the object (German ending as for a neuter noun)
        article, noun = ode.split(" ", 1)
        ode, oen = f"{article} {ade} {noun}", f"{oen.split(' ', 1)[0]} {aen} {oen.split(' ', 1)[1]}"
    de = " ".join(w for w in (sde, vde, ode, pde) if w).capitalize() + "."
    en = " ".join(w for w in (sen, ven, oen, pen) if w).capitalize() + "."
    return de, en


def main():
    rng = random.Random(15)
    folder = os.path.dirname(os.path.abspath(__file__))
    for split, count in (("train", 600), ("val", 40), ("test", 40)):
        pairs = [pair(rng) for _ in range(count)]
        for index, language in enumerate(("de", "en")):
            with gzip.GzipFile(os.path.join(folder, f"{split}.{language}.gz"), "wb", mtime=0) as f:
                f.write("".join(p[index] + "\n" for p in pairs).encode("utf-8"))
    with open(os.path.join(folder, "pairs.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{de}\t{en}\n" for de, en in [pair(rng) for _ in range(40)])


if __name__ == "__main__":
    main()
