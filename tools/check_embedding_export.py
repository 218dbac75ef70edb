"""Checks an exported encoder's sentence embeddings against sentence-transformers', in a fresh process.

Loads EXPORT_DIR/NAME/<latest version> (the SavedModel's `embed` and
`similarity` signatures) and its text-in TFLite files
(EXPORT_DIR/tflite/NAME/<version>/text_*.tflite), embeds the sentences of
--reference (tests/fixtures/minilm_sentence_embeddings.npz, made by
tools/make_embedding_reference.py with sentence-transformers) and prints,
per artifact, the max abs difference from sentence-transformers' embeddings
and the lowest cosine between them. Texts longer than the SavedModel's
sequence length (sentence-transformers reads up to its max_seq_length) are
left out and counted (texts of 100 words or more).

    python tools/check_embedding_export.py --export_dir=serving --model_name=minilm
"""

import _cli

_cli.quiet()

import glob  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from tfplm import export  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "tools/export.py's --export_dir of an encoder.")
flags.DEFINE_string("model_name", None, "Its --model_name.")
flags.DEFINE_string("reference", os.path.join(REPO, "tests", "fixtures", "minilm_sentence_embeddings.npz"), "Reference embeddings (.npz: sentences, embeddings).")


def _latest(folder):
    versions = [d for d in glob.glob(os.path.join(folder, "*")) if os.path.basename(d).isdigit()]
    if not versions:
        raise ValueError(f"{folder!r} has no version folder; export the encoder there first (tools/export.py)")
    return max(versions, key=lambda d: int(os.path.basename(d)))


def _row(name, embeddings, reference):
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    cosines = np.sum(unit * reference, -1)
    print(f"{name:<28} max abs diff {np.abs(embeddings - reference).max():.2e}   lowest cosine {cosines.min():.6f}")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])}; flags are --name=value")
    if not FLAGS.export_dir or not FLAGS.model_name:
        raise ValueError("--export_dir and --model_name are required")
    reference = np.load(FLAGS.reference)
    saved_model = _latest(os.path.join(FLAGS.export_dir, FLAGS.model_name))
    loaded = export.load(saved_model)
    sentences = [str(s) for s in reference["sentences"]]
    embed = loaded.signatures["embed"]
    embeddings = embed(text=tf.constant(sentences))["embedding"].numpy()
    # Texts the export truncates (at its seq_length, 128 tokens for MiniLM) cannot match a
    # reader of 256; the fixture's long text has ~200 words, the others fewer than 30.
    keep = np.array([len(sentence.split()) < 100 for sentence in sentences])
    print(f"{saved_model}: {keep.sum()} of {len(sentences)} reference texts ({(~keep).sum()} longer than 100 words left out)")
    expected = reference["embeddings"][keep]
    _row("saved_model embed", embeddings[keep], expected)
    texts = tf.constant([s for s, k in zip(sentences, keep) if k])
    similarity = loaded.signatures["similarity"](text_a=texts, text_b=texts[::-1])["similarity"].numpy()
    print(f"{'saved_model similarity':<28} max abs diff {np.abs(similarity - np.sum(expected * expected[::-1], -1)).max():.2e}")
    tflite = _latest(os.path.join(FLAGS.export_dir, "tflite", FLAGS.model_name))
    for path in sorted(glob.glob(os.path.join(tflite, "text_*.tflite"))):
        runner = export.TFLiteModel(path)
        _row(os.path.basename(path), runner([s for s, k in zip(sentences, keep) if k])["embedding"], expected)
    return 0


if __name__ == "__main__":
    _cli.run(main)
