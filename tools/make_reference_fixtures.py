r"""Writes tiny Hugging Face BERT and GPT-2 checkpoints and their transformers outputs.

The files let tfplm's tests prove numerical parity with Hugging Face
`transformers` without torch or a network. Run it with the reference
environment (torch + transformers), never with tfplm's `.venv`:

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy absl-py pytest
    .venv-ref/bin/python tools/make_reference_fixtures.py --output_dir=tests/fixtures

and check the result against a fresh transformers run with

    .venv-ref/bin/python -m pytest --noconftest tests/test_reference_fixtures.py

(`--noconftest` because tests/conftest.py imports TensorFlow, which the
reference environment does not have). Everything is seeded: a rerun with the same
package versions rewrites the same numbers. The fixtures were made with
torch 2.13.0 (CPU) and transformers 5.23.0.

What it writes under --output_dir (about 1 MB in all):

    hf_bert/        BertForPreTraining: config.json, model.safetensors (names
                    `bert.*`, `cls.predictions.*`, `cls.seq_relationship.*`),
                    vocab.txt and tokenizer.json (a lower-cased WordPiece vocab
                    of 800 pieces learned on 400 Gutenberg sentences; see
                    learn_wordpiece_vocab).
    hf_bert_model/  the same weights as a plain BertModel (names without the
                    `bert.` prefix, no heads), with the same vocab.txt and
                    tokenizer.json.
    hf_gpt2/        GPT2LMHeadModel: config.json, model.safetensors (names
                    `transformer.*`; `lm_head.weight` is tied to
                    `transformer.wte.weight` and not stored), vocab.json,
                    merges.txt and tokenizer.json (a byte-level BPE learned
                    with HF `tokenizers` on the same sentences).
    hf_bert_reference.npz, hf_gpt2_reference.npz: inputs and outputs, below.

Every weight is drawn at random with larger spreads than transformers' own
initialisation (matrices N(0, 0.2), LayerNorm gammas 1 + N(0, 0.1), every bias
and beta N(0, 0.05), the MLM output bias included): attention is far from
uniform, GELU is in its curved range, and a loader that drops a bias, a
LayerNorm or transposes a square matrix changes the outputs visibly.

hf_bert_reference.npz (B=3 rows, T=24 tokens, P=4 predictions, L=2 layers,
H=32, V = the vocab size; BertForPreTraining in eval mode, float32, eager
attention):

    text_a, text_b        [3] str: the raw sentences (text_b "" for row 2, a
                          single segment). Row 0 is a sentence and the one
                          after it, row 1 two unrelated sentences truncated to T
                          (HF "longest_first"), row 2 one sentence.
    input_word_ids        [3, 24] int32: [CLS] a [SEP] b [SEP], 0-padded, with
                          [MASK] at the masked_lm_positions that have weight 1.
    input_mask            [3, 24] int32: 1 for real tokens, 0 for padding.
    input_type_ids        [3, 24] int32: 0 for [CLS] a [SEP], 1 for b [SEP].
    masked_lm_positions   [3, 4] int32: positions to predict, 0-padded.
    masked_lm_ids         [3, 4] int32: the original tokens there, 0-padded.
    masked_lm_weights     [3, 4] float32: 1 for a real prediction, 0 for padding.
    embedding_output      [3, 24, 32] float32: LayerNorm(word + position +
                          type embeddings), HF hidden_states[0].
    encoder_outputs       [2, 3, 24, 32] float32: each layer's output, HF
                          hidden_states[1:].
    sequence_output       [3, 24, 32] float32: the last layer's output.
    pooled_output         [3, 32] float32: tanh(dense([CLS] output)).
    mlm_logits            [3, 4, V] float32: the MLM head's logits gathered at
                          masked_lm_positions (padding positions gather
                          position 0, as BERT's pretraining data does).
    nsp_logits            [3, 2] float32: next-sentence logits
                          (0 = "is next", 1 = "random").

hf_gpt2_reference.npz (B=3, T=16, L=2, H=32, V = the BPE vocab size;
GPT2LMHeadModel in eval mode, float32, eager attention):

    texts                 [3] str: the raw texts of token_ids.
    token_ids             [3, 16] int32: byte-level BPE ids, right-padded with
                          <|endoftext|> (id end_token_id).
    padding_mask          [3, 16] int32: 1 for real tokens, 0 for padding.
    embedding_output      [3, 16, 32] float32: wte(ids) + wpe(0..15).
    block_outputs         [2, 3, 16, 32] float32: each block's output (before
                          the final LayerNorm; HF hidden_states[1:L] plus the
                          last block's raw output, which HF's tuple replaces by
                          the ln_f output).
    final_hidden          [3, 16, 32] float32: ln_f(last block output).
    logits                [3, 16, V] float32: final_hidden @ wte.T.
                          Positions with padding_mask 0 hold whatever HF computes
                          there: compare real positions only.
    end_token_id          [] int32: the id of <|endoftext|>.
    prompt_ids            [1, 6] int32: one unpadded prompt.
    generated_ids         [1, 18] int32: model.generate(prompt_ids,
                          max_new_tokens=12, do_sample=False): prompt + 12
                          greedy tokens (no <|endoftext|> among them).
    batch_prompt_ids      [2, 6] int32: two equal-length prompts.
    batch_generated_ids   [2, 18] int32: greedy generation of both at once.
    ragged_prompt_ids     [2, 7] int32: two prompts of different lengths,
                          right-padded with 0 (lengths in ragged_prompt_lengths).
    ragged_prompt_lengths [2] int32.
    ragged_new_ids        [2, 12] int32: each row's 12 greedy tokens after its
                          own prompt (HF: each prompt generated alone; a
                          left-padded HF batch, whose position ids come from
                          the attention mask's cumsum, gives the same).
                          Every prompt comes from a different sentence.
    generation_min_margin [] float32: the smallest top-1 minus top-2 logit gap
                          over every greedy step above; larger than 5e-3, so
                          float32 noise cannot flip a token.
"""

import pathlib
import random
import re

from absl import app, flags, logging
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", str(REPO / "tests" / "fixtures"), "where the fixtures go")
flags.DEFINE_string(
    "data_dir", str(REPO.parent / "shared" / "data"), "the data folder holding corpus/books/"
)
flags.DEFINE_integer("seed", 1234, "seed for sentence choice and weights")

BOOKS = ("emma.txt", "frankenstein.txt", "little_women.txt", "pride_and_prejudice.txt")
SENTENCES_PER_BOOK = 100
BERT_VOCAB_SIZE = 800
GPT2_VOCAB_SIZE = 600
BERT_LENGTH = 24
MAX_PREDICTIONS = 4
GPT2_LENGTH = 16
PROMPT_LENGTH = 6
NEW_TOKENS = 12
MIN_MARGIN = 5e-3
# Random tiny models like to repeat one token; prompts whose continuation has
# fewer distinct tokens than this are skipped, so the fixture exercises the cache.
MIN_DISTINCT = 7

BERT_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",  # exact erf GELU, as BERT
    max_position_embeddings=64,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    pad_token_id=0,
)
GPT2_CONFIG = dict(
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_inner=None,  # 4 * n_embd = 128
    n_positions=64,
    activation_function="gelu_new",  # tanh-approximated GELU, as GPT-2
    layer_norm_epsilon=1e-5,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)


def book_sentences(path):
    """Sentences of 6 to 25 words from a Gutenberg book's body, in order."""
    text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    start = text.index("*** START OF")
    start = text.index("\n", start)
    end = text.index("*** END OF")
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text[start:end]):
        paragraph = " ".join(paragraph.split())
        for sentence in re.split(
            r"(?<!Mr\.)(?<!Mrs\.)(?<!Dr\.)(?<!St\.)(?<=[.!?])\s+(?=[A-Z\"“])", paragraph
        ):
            if 6 <= len(sentence.split()) <= 25 and sentence[-1] in ".!?\"”":
                sentences.append(sentence)
    return sentences


def choose_sentences(data_dir, rng):
    """Runs of consecutive sentences: 100 per book, from a seeded start."""
    chosen = []
    for name in BOOKS:
        sentences = book_sentences(pathlib.Path(data_dir) / "corpus" / "books" / name)
        start = rng.randrange(len(sentences) // 4, len(sentences) - SENTENCES_PER_BOOK)
        chosen += sentences[start : start + SENTENCES_PER_BOOK]
    return chosen


def randomize(model, seed):
    """Redraws every parameter (see the module docstring) from a seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=generator) * std

    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            is_norm = "LayerNorm" in name or ".ln_" in name or name.startswith("ln_")
            if is_norm and name.endswith("weight"):
                param.copy_(1.0 + normal(param.shape, 0.1))
            elif param.ndim == 1:
                param.copy_(normal(param.shape, 0.05))
            else:
                param.copy_(normal(param.shape, 0.2))


def learn_wordpiece_vocab(sentences, size):
    """A WordPiece vocab learned by BPE-style merges, ties broken by the pair's text.

    The same algorithm as `tokenizers`' WordPieceTrainer (most frequent pair of
    adjacent pieces first), written out because that trainer numbers its
    "##" pieces in hash order, so its vocab changes from run to run.
    """
    import collections

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(lowercase=True)
    pre_tokenizer = BertPreTokenizer()
    words = collections.Counter(
        word
        for sentence in sentences
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
    )
    splits = {word: [word[0]] + ["##" + c for c in word[1:]] for word in words}
    starts = sorted({pieces[0] for pieces in splits.values()})
    continuations = sorted({p for pieces in splits.values() for p in pieces[1:]})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + starts + continuations
    while len(vocab) < size:
        pairs = collections.Counter()
        for word, pieces in splits.items():
            for pair in zip(pieces, pieces[1:]):
                pairs[pair] += words[word]
        candidates = [(-count, pair) for pair, count in pairs.items() if count >= 2]
        if not candidates:
            break
        _, (left, right) = min(candidates)
        merged = left + right[2:]
        vocab.append(merged)
        for pieces in splits.values():
            i = 0
            while i < len(pieces) - 1:
                if pieces[i] == left and pieces[i + 1] == right:
                    pieces[i : i + 2] = [merged]
                i += 1
    return vocab


def learn_bert_vocab(sentences, out_dir):
    from tokenizers import BertWordPieceTokenizer

    vocab = learn_wordpiece_vocab(sentences, BERT_VOCAB_SIZE)
    (out_dir / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    tokenizer = BertWordPieceTokenizer(str(out_dir / "vocab.txt"), lowercase=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    return tokenizer


def learn_gpt2_vocab(sentences, out_dir):
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    tokenizer.train_from_iterator(
        sentences, vocab_size=GPT2_VOCAB_SIZE, min_frequency=2, special_tokens=["<|endoftext|>"]
    )
    tokenizer.save_model(str(out_dir))  # vocab.json, merges.txt
    tokenizer.save(str(out_dir / "tokenizer.json"))
    return tokenizer


def bert_inputs(tokenizer, sentences, rng):
    """Three packed rows with masked positions, as BERT's pretraining data."""
    vocab = tokenizer.get_vocab()
    mask_id = vocab["[MASK]"]

    def length(text):
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    long = [s for s in sentences if length(s) >= 16]
    # Row 0: two consecutive sentences that leave padding; row 2: a short one.
    pairs_fit = [length(a) + length(b) <= 17 for a, b in zip(sentences, sentences[1:])]
    i = pairs_fit.index(True)
    short = [s for s in sentences if length(s) <= 12]
    tokenizer.enable_truncation(BERT_LENGTH, strategy="longest_first")
    tokenizer.enable_padding(length=BERT_LENGTH, pad_id=vocab["[PAD]"], pad_token="[PAD]")
    pairs = [
        (sentences[i], sentences[i + 1]),  # consecutive: "is next"
        (long[0], long[-1]),  # unrelated, truncated to BERT_LENGTH
        (short[-1], None),  # one segment
    ]
    rows = {k: [] for k in ("input_word_ids", "input_mask", "input_type_ids")}
    masked = {k: [] for k in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")}
    for row, (a, b) in enumerate(pairs):
        encoding = tokenizer.encode(a, b) if b is not None else tokenizer.encode(a)
        ids = list(encoding.ids)
        candidates = [
            j for j, t in enumerate(encoding.tokens) if t not in ("[CLS]", "[SEP]", "[PAD]")
        ]
        count = MAX_PREDICTIONS - (row == 2)  # row 2 has a padded prediction slot
        positions = sorted(rng.sample(candidates, count))
        originals = [ids[j] for j in positions]
        for j in positions:
            ids[j] = mask_id
        pad = MAX_PREDICTIONS - count
        rows["input_word_ids"].append(ids)
        rows["input_mask"].append(encoding.attention_mask)
        rows["input_type_ids"].append(encoding.type_ids)
        masked["masked_lm_positions"].append(positions + [0] * pad)
        masked["masked_lm_ids"].append(originals + [0] * pad)
        masked["masked_lm_weights"].append([1.0] * count + [0.0] * pad)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    arrays = {k: np.array(v, np.int32) for k, v in rows.items()}
    arrays["masked_lm_positions"] = np.array(masked["masked_lm_positions"], np.int32)
    arrays["masked_lm_ids"] = np.array(masked["masked_lm_ids"], np.int32)
    arrays["masked_lm_weights"] = np.array(masked["masked_lm_weights"], np.float32)
    arrays["text_a"] = np.array([a for a, _ in pairs])
    arrays["text_b"] = np.array([b or "" for _, b in pairs])
    return arrays


def make_bert(sentences, out_dir, seed, rng):
    import torch
    from transformers import BertConfig, BertForPreTraining, BertModel

    bert_dir = out_dir / "hf_bert"
    model_dir = out_dir / "hf_bert_model"
    bert_dir.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = learn_bert_vocab(sentences, bert_dir)
    for name in ("vocab.txt", "tokenizer.json"):
        (model_dir / name).write_bytes((bert_dir / name).read_bytes())

    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), **BERT_CONFIG)
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = BertForPreTraining(config).eval()
    randomize(model, seed)
    model.save_pretrained(str(bert_dir), safe_serialization=True)
    encoder = BertModel(config).eval()
    encoder.load_state_dict(model.bert.state_dict())
    encoder.save_pretrained(str(model_dir), safe_serialization=True)

    arrays = bert_inputs(tokenizer, sentences, rng)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(arrays["input_word_ids"], dtype=torch.long),
            attention_mask=torch.tensor(arrays["input_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(arrays["input_type_ids"], dtype=torch.long),
            output_hidden_states=True,
        )
        # The pooler is not part of BertForPreTraining's outputs: run it on the
        # same sequence output.
        pooled = model.bert.pooler(out.hidden_states[-1])
    positions = arrays["masked_lm_positions"].astype(np.int64)
    logits = out.prediction_logits.numpy()
    arrays["embedding_output"] = out.hidden_states[0].numpy()
    arrays["encoder_outputs"] = np.stack([h.numpy() for h in out.hidden_states[1:]])
    arrays["sequence_output"] = out.hidden_states[-1].numpy()
    arrays["pooled_output"] = pooled.numpy()
    arrays["mlm_logits"] = np.take_along_axis(logits, positions[:, :, None], axis=1)
    arrays["nsp_logits"] = out.seq_relationship_logits.numpy()
    np.savez_compressed(out_dir / "hf_bert_reference.npz", **arrays)
    return config, arrays


def greedy(model, prompt_ids, attention_mask=None):
    """HF greedy generation; returns (all ids, smallest top-1 - top-2 logit gap)."""
    import torch

    out = model.generate(
        input_ids=torch.tensor(prompt_ids, dtype=torch.long),
        attention_mask=torch.tensor(
            np.ones_like(prompt_ids) if attention_mask is None else attention_mask,
            dtype=torch.long,
        ),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=model.config.eos_token_id,
    )
    top2 = torch.stack(out.logits).topk(2, dim=-1).values  # [steps, batch, 2]
    margin = float((top2[..., 0] - top2[..., 1]).min())
    return out.sequences.numpy().astype(np.int32), margin


def make_gpt2(sentences, out_dir, seed):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2_dir = out_dir / "hf_gpt2"
    gpt2_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = learn_gpt2_vocab(sentences, gpt2_dir)
    end_id = tokenizer.token_to_id("<|endoftext|>")
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=end_id,
        eos_token_id=end_id,
        **GPT2_CONFIG,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    randomize(model, seed + 1)
    model.save_pretrained(str(gpt2_dir), safe_serialization=True)

    def length(text):
        return len(tokenizer.encode(text).ids)

    padded = [s for s in sentences[200:] if 8 <= length(s) < GPT2_LENGTH]
    full = [s for s in sentences[200:] if length(s) == GPT2_LENGTH]
    texts = [padded[0], full[0], next(s for s in padded if length(s) != length(padded[0]))]
    token_ids = np.full((3, GPT2_LENGTH), end_id, np.int32)
    padding_mask = np.zeros((3, GPT2_LENGTH), np.int32)
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text).ids
        token_ids[row, : len(ids)] = ids
        padding_mask[row, : len(ids)] = 1

    # HF's hidden_states tuple ends with ln_f's output, not the last block's, so
    # the raw block outputs are taken with hooks.
    block_outputs = []
    hooks = [
        block.register_forward_hook(
            lambda module, args, out: block_outputs.append(
                out[0] if isinstance(out, tuple) else out
            )
        )
        for block in model.transformer.h
    ]
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            attention_mask=torch.tensor(padding_mask, dtype=torch.long),
            output_hidden_states=True,
        )
    for hook in hooks:
        hook.remove()
    arrays = {
        "texts": np.array(texts),
        "token_ids": token_ids,
        "padding_mask": padding_mask,
        "embedding_output": out.hidden_states[0].numpy(),
        "block_outputs": np.stack([b.numpy() for b in block_outputs]),
        "final_hidden": out.hidden_states[-1].numpy(),
        "logits": out.logits.numpy(),
        "end_token_id": np.int32(end_id),
    }
    np.testing.assert_allclose(
        model.transformer.ln_f(torch.tensor(arrays["block_outputs"][-1])).detach().numpy(),
        arrays["final_hidden"],
        atol=1e-6,
    )

    arrays.update(gpt2_generations(model, tokenizer, sentences[300:], end_id))
    np.savez_compressed(out_dir / "hf_gpt2_reference.npz", **arrays)
    return config, arrays


def gpt2_generations(model, tokenizer, sentences, end_id):
    """Greedy generations from sentence openings whose every step is decisive.

    A prompt is kept when each greedy step's top-1 logit beats the runner-up by
    more than MIN_MARGIN, no <|endoftext|> is generated and each continuation
    has at least MIN_DISTINCT different tokens.
    """
    openings = [tokenizer.encode(s).ids for s in sentences]
    margins = []

    def first_acceptable(prompts):
        for prompt in prompts:
            prompt = np.array(prompt, np.int32)
            generated, margin = greedy(model, prompt)
            new = generated[:, prompt.shape[1] :]
            varied = all(len(set(row.tolist())) >= MIN_DISTINCT for row in new)
            if margin > MIN_MARGIN and end_id not in new and varied:
                margins.append(margin)
                return prompt, generated
        raise RuntimeError("no prompt gives decisive, varied greedy steps; change --seed")

    prompt, generated = first_acceptable([ids[:PROMPT_LENGTH]] for ids in openings[:40])
    batch_prompt, batch_generated = first_acceptable(
        [a[:PROMPT_LENGTH], b[:PROMPT_LENGTH]] for a, b in zip(openings[40:], openings[41:])
    )
    lengths = (PROMPT_LENGTH - 2, PROMPT_LENGTH + 1)
    ragged_prompt_ids = np.zeros((2, max(lengths)), np.int32)
    ragged_new_ids = np.zeros((2, NEW_TOKENS), np.int32)
    for row, length in enumerate(lengths):
        start = 60 + 20 * row  # sentences that no other prompt uses
        ragged_prompt, ragged_generated = first_acceptable(
            [ids[:length]] for ids in openings[start:] if len(ids) >= length
        )
        ragged_prompt_ids[row, :length] = ragged_prompt[0]
        ragged_new_ids[row] = ragged_generated[0, length:]

    # The same rows left-padded in one HF batch (position ids from the mask's
    # cumsum) must continue exactly as the single runs.
    width = max(lengths)
    left = np.full((2, width), end_id, np.int32)
    left_mask = np.zeros((2, width), np.int64)
    for row, length in enumerate(lengths):
        left[row, width - length :] = ragged_prompt_ids[row, :length]
        left_mask[row, width - length :] = 1
    batched, _ = greedy(model, left, left_mask)
    np.testing.assert_array_equal(batched[:, width:], ragged_new_ids)

    return {
        "prompt_ids": prompt,
        "generated_ids": generated,
        "batch_prompt_ids": batch_prompt,
        "batch_generated_ids": batch_generated,
        "ragged_prompt_ids": ragged_prompt_ids,
        "ragged_prompt_lengths": np.array(lengths, np.int32),
        "ragged_new_ids": ragged_new_ids,
        "generation_min_margin": np.float32(min(margins)),
    }


def main(argv):
    del argv
    import torch
    import transformers

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out_dir = pathlib.Path(FLAGS.output_dir)
    rng = random.Random(FLAGS.seed)
    sentences = choose_sentences(FLAGS.data_dir, rng)
    bert_config, bert = make_bert(sentences, out_dir, FLAGS.seed, rng)
    gpt2_config, gpt2 = make_gpt2(sentences, out_dir, FLAGS.seed)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"BERT vocab {bert_config.vocab_size}, GPT-2 vocab {gpt2_config.vocab_size}")
    for name, arrays in (("hf_bert_reference.npz", bert), ("hf_gpt2_reference.npz", gpt2)):
        print(name)
        for key, value in arrays.items():
            print(f"  {key:24s} {value.dtype} {list(value.shape)}")
    logging.info("wrote fixtures to %s", out_dir)


if __name__ == "__main__":
    app.run(main)
