"""The transformers reference for token tagging: `tagging/conll2003`'s recipe in PyTorch.

Fine-tunes `BertForTokenClassification` from a Hugging Face BERT checkpoint
with tfplm's recipe (words → WordPieces, the label on each word's first piece,
the other pieces ignored; sentences longer than seq_length split into windows
at word boundaries; AdamW with decoupled weight decay off biases and
LayerNorm, linear warmup and decay, global-norm clipping at 1.0; bfloat16
autocast on CPUs that have it; batches of similar lengths) and scores the test file with the same metric
(`tfplm.data.conll.entity_scores`, conlleval's definition) and with seqeval.

Needs torch and transformers (`pip install -e .[reference]`), not tfplm's TensorFlow models:

    python tools/reference_ner.py --init_checkpoint=$MINILM --data_dir=../shared/data/ner/conll2003 \
        --output=runs/reference_conll2003.json
"""

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init_checkpoint", required=True, help="a Hugging Face BERT folder")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--train_file", default="train.txt")
    parser.add_argument("--test_file", default="test.txt")
    parser.add_argument("--separator", default="", help='"" = whitespace; "tab" for WNUT-17')
    parser.add_argument("--tag_column", type=int, default=-1)
    parser.add_argument("--tag_scheme", default="IOB2")
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_fraction", type=float, default=0.1)
    parser.add_argument("--bf16", type=int, default=1, help="bfloat16 autocast (CPU)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--output", default="", help="write the results as JSON here")
    parser.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (a speed probe)")
    return parser.parse_args(argv)


def encode(tokenizer, tagged, names, max_pieces):
    """Windows of (piece ids, labels, [(sentence, word, first piece)]): first-piece labels, -100 elsewhere."""
    index = {name: i for i, name in enumerate(names)}
    tags = tagged.iob2_tags() if tagged.tags is not None else None
    unk = tokenizer.unk_token_id
    pieces = tokenizer([w for s in tagged.words for w in s], add_special_tokens=False)["input_ids"]
    windows, position = [], 0
    for s, words in enumerate(tagged.words):
        current = ([], [], [])
        for w in range(len(words)):
            word_pieces = pieces[position + w] or [unk]
            if current[0] and len(current[0]) + len(word_pieces) > max_pieces:
                windows.append(current)
                current = ([], [], [])
            word_pieces = word_pieces[:max_pieces]
            current[2].append((s, w, len(current[0])))
            current[1].extend([index[tags[s][w]] if tags else -100] + [-100] * (len(word_pieces) - 1))
            current[0].extend(word_pieces)
        windows.append(current)
        position += len(words)
    return windows


def batches(windows, batch_size, cls, sep, shuffle, rng):
    import torch

    order = list(range(len(windows)))
    groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if shuffle:
        # Batches of similar lengths, as tfplm's length buckets (and Trainer's group_by_length) make.
        rng.shuffle(order)
        groups = []
        for start in range(0, len(order), 50 * batch_size):
            block = sorted(order[start : start + 50 * batch_size], key=lambda i: len(windows[i][0]))
            groups += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
        rng.shuffle(groups)
    for group in groups:
        chosen = [windows[i] for i in group]
        length = max(len(w[0]) for w in chosen) + 2
        ids = torch.zeros((len(chosen), length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, (pieces, window_labels, _) in enumerate(chosen):
            n = len(pieces) + 2
            ids[row, :n] = torch.tensor([cls, *pieces, sep])
            mask[row, :n] = 1
            labels[row, 1 : n - 1] = torch.tensor(window_labels)
        yield chosen, ids, mask, labels


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers
    from seqeval.metrics import f1_score

    from tfplm.data import conll

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    separator = {"tab": "\t", "space": " "}.get(args.separator, args.separator)
    read = lambda name, has_tags=True: conll.read_conll(  # noqa: E731
        os.path.join(args.data_dir, name), args.tag_column, separator, args.tag_scheme, has_tags
    )
    train, test = read(args.train_file), read(args.test_file)
    names = conll.label_names(train)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(args.init_checkpoint)
    model = transformers.BertForTokenClassification.from_pretrained(
        args.init_checkpoint, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    train_windows = encode(tokenizer, train, names, args.seq_length - 2)
    test_windows = encode(tokenizer, test, names, args.seq_length - 2)
    steps = args.epochs * math.ceil(len(train_windows) / args.batch_size)
    warmup = int(args.warmup_fraction * steps)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=args.learning_rate, eps=1e-6,
    )
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16))
    rng = random.Random(args.seed)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    started, step = time.time(), 0
    model.train()
    for epoch in range(args.epochs):
        for _, ids, mask, labels in batches(train_windows, args.batch_size, cls, sep, True, rng):
            with autocast:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), schedule.step(), optimizer.zero_grad()
            step += 1
            if step == args.max_steps:
                print(f"{step} steps of batch {args.batch_size} in {time.time() - started:.1f} s", flush=True)
                return None
            if step % 100 == 0:
                print(f"step {step}/{steps} loss {loss.item():.4f} {time.time() - started:.0f} s", flush=True)
    train_seconds = time.time() - started
    model.eval()
    predicted = [["O"] * len(words) for words in test.words]
    with torch.no_grad(), autocast:
        for chosen, ids, mask, _ in batches(test_windows, 64, cls, sep, False, rng):
            best = model(input_ids=ids, attention_mask=mask).logits.float().argmax(-1).numpy()
            for row, (_, _, words) in enumerate(chosen):
                for s, w, first in words:
                    predicted[s][w] = names[best[row, first + 1]]
    if args.tag_scheme == "IOB1":
        predicted = [conll.to_iob1(tags) for tags in predicted]
    scores = conll.entity_scores(test.tags, predicted)
    results = {
        "recipe": vars(args),
        "train_seconds": round(train_seconds, 1),
        "steps": steps,
        "test": scores.as_dict(),
        "seqeval_f1": f1_score(test.tags, predicted),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps({k: results[k] for k in ("train_seconds", "steps", "seqeval_f1")}), f"f1 {scores.f1:.4f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
