"""The stored Hugging Face reference outputs are what transformers computes today.

tfplm's parity tests compare against tests/fixtures/hf_*_reference.npz without
torch. This test recomputes those arrays with transformers from the fixture
checkpoints, so a stale or hand-edited .npz cannot pass for a reference. It runs
only where torch and transformers are importable (the reference environment of
tools/make_reference_fixtures.py):

    .venv-ref/bin/python -m pytest --noconftest tests/test_reference_fixtures.py
"""

import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ATOL = 1e-5


def _bert_outputs(torch, transformers, ref):
    model = transformers.BertForPreTraining.from_pretrained(
        FIXTURES / "hf_bert", attn_implementation="eager"
    ).eval()
    encoder = transformers.BertModel.from_pretrained(
        FIXTURES / "hf_bert_model", attn_implementation="eager"
    ).eval()
    inputs = {
        "input_ids": torch.tensor(ref["input_word_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(ref["input_mask"], dtype=torch.long),
        "token_type_ids": torch.tensor(ref["input_type_ids"], dtype=torch.long),
    }
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        plain = encoder(**inputs)
    positions = torch.tensor(ref["masked_lm_positions"], dtype=torch.long)
    vocab_size = out.prediction_logits.shape[-1]
    mlm = torch.gather(out.prediction_logits, 1, positions[:, :, None].expand(-1, -1, vocab_size))
    return {
        "embedding_output": out.hidden_states[0],
        "encoder_outputs": torch.stack(out.hidden_states[1:]),
        "sequence_output": out.hidden_states[-1],
        "pooled_output": model.bert.pooler(out.hidden_states[-1]),
        "mlm_logits": mlm,
        "nsp_logits": out.seq_relationship_logits,
        # The BertModel copy (names without "bert.") must give the same encoder.
        "plain/sequence_output": plain.last_hidden_state,
        "plain/pooled_output": plain.pooler_output,
    }


def _bert_token_ids(tokenizers, ref):
    """The stored packed ids come from the fixture tokenizer (before masking)."""
    tokenizer = tokenizers.Tokenizer.from_file(str(FIXTURES / "hf_bert" / "tokenizer.json"))
    length = ref["input_word_ids"].shape[1]
    tokenizer.enable_truncation(length, strategy="longest_first")
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encodings = [
        tokenizer.encode(a, b) if b else tokenizer.encode(a)
        for a, b in zip(ref["text_a"].tolist(), ref["text_b"].tolist())
    ]
    unmasked = ref["input_word_ids"].copy()
    for row in range(unmasked.shape[0]):
        real = ref["masked_lm_weights"][row] > 0
        unmasked[row, ref["masked_lm_positions"][row][real]] = ref["masked_lm_ids"][row][real]
    return (
        np.array([e.ids for e in encodings]),
        np.array([e.type_ids for e in encodings]),
        unmasked,
    )


def _gpt2_outputs(torch, transformers, ref):
    model = transformers.GPT2LMHeadModel.from_pretrained(
        FIXTURES / "hf_gpt2", attn_implementation="eager"
    ).eval()
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
            input_ids=torch.tensor(ref["token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(ref["padding_mask"], dtype=torch.long),
            output_hidden_states=True,
        )
    for hook in hooks:
        hook.remove()

    def greedy(prompt):
        prompt = torch.tensor(prompt, dtype=torch.long)
        return model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=ref["ragged_new_ids"].shape[1],
            do_sample=False,
            pad_token_id=int(ref["end_token_id"]),
        )

    ragged = [
        greedy(ids[None, :length])[0, length:]
        for ids, length in zip(ref["ragged_prompt_ids"], ref["ragged_prompt_lengths"])
    ]
    return {
        "embedding_output": out.hidden_states[0],
        "block_outputs": torch.stack(block_outputs),
        "final_hidden": out.hidden_states[-1],
        "logits": out.logits,
        "generated_ids": greedy(ref["prompt_ids"]),
        "batch_generated_ids": greedy(ref["batch_prompt_ids"]),
        "ragged_new_ids": torch.stack(ragged),
    }


def test_transformers_reproduces_stored_reference_outputs():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch.manual_seed(0)

    bert = np.load(FIXTURES / "hf_bert_reference.npz")
    gpt2 = np.load(FIXTURES / "hf_gpt2_reference.npz")
    bert_live = {k: v.detach().numpy() for k, v in _bert_outputs(torch, transformers, bert).items()}
    gpt2_live = {k: v.detach().numpy() for k, v in _gpt2_outputs(torch, transformers, gpt2).items()}

    mismatches = []
    for name, live, stored in (("bert", bert_live, bert), ("gpt2", gpt2_live, gpt2)):
        for key, value in live.items():
            expected = stored[key.split("/")[-1]]
            if value.shape != expected.shape:
                mismatches.append(f"{name}.{key}: shape {value.shape} != stored {expected.shape}")
            elif value.dtype.kind in "iu":
                if not np.array_equal(value, expected):
                    mismatches.append(f"{name}.{key}: {value.tolist()} != {expected.tolist()}")
            else:
                err = float(np.max(np.abs(value - expected)))
                if not err <= ATOL:
                    mismatches.append(f"{name}.{key}: max abs diff {err:.3g} > {ATOL}")

    ids, type_ids, unmasked = _bert_token_ids(tokenizers, bert)
    if not (np.array_equal(ids, unmasked) and np.array_equal(type_ids, bert["input_type_ids"])):
        mismatches.append("bert: the fixture tokenizer no longer gives the stored input ids")
    gpt2_tokenizer = tokenizers.Tokenizer.from_file(str(FIXTURES / "hf_gpt2" / "tokenizer.json"))
    for row, text in enumerate(gpt2["texts"].tolist()):
        n = int(gpt2["padding_mask"][row].sum())
        if gpt2_tokenizer.encode(text).ids != gpt2["token_ids"][row, :n].tolist():
            mismatches.append(f"gpt2: the fixture tokenizer no longer gives row {row}'s token ids")
    assert not mismatches, "\n".join(mismatches)
