"""Named architectures of the zoo, with computed parameter counts and FLOPs."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture by name.

    Attributes:
        name: the preset's name, e.g. "bert_base".
        family: "bert", "gpt" or "seq2seq": which model classes can build it.
        config: constructor arguments of the family's backbone.
        description: one line for tables and `--help`.
        seq_length: sequence length at which FLOPs per token are quoted.
    """

    name: str
    family: str
    config: dict
    description: str
    seq_length: int


def _bert(layers, hidden, heads, description):
    config = dict(
        vocab_size=30522,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=4 * hidden,
        max_length=512,
        type_vocab_size=2,
    )
    return "bert", config, description, 128


def _gpt(layers, hidden, heads, max_length, description):
    config = dict(
        vocab_size=50257,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=4 * hidden,
        max_length=max_length,
    )
    return "gpt", config, description, max_length


_PRESETS = {
    "bert_tiny": _bert(2, 128, 2, "BERT-Tiny (Turc et al., 2019), L2/H128/A2"),
    "bert_mini": _bert(4, 256, 4, "BERT-Mini, L4/H256/A4"),
    "bert_small": _bert(4, 512, 8, "BERT-Small, L4/H512/A8"),
    "bert_medium": _bert(8, 512, 8, "BERT-Medium, L8/H512/A8"),
    "bert_base": _bert(12, 768, 12, "BERT-Base (Devlin et al., 2019), L12/H768/A12"),
    "bert_large": _bert(24, 1024, 16, "BERT-Large, L24/H1024/A16"),
    "gpt_nano": _gpt(3, 96, 3, 256, "a tiny GPT for tests and demos, L3/H96/A3"),
    "gpt2_small": _gpt(12, 768, 12, 1024, "GPT-2 small (Radford et al., 2019), L12/H768/A12"),
    "gpt2_medium": _gpt(24, 1024, 16, 1024, "GPT-2 medium, L24/H1024/A16"),
    "transformer_tiny": (
        "seq2seq",
        dict(
            vocab_size=8000,
            hidden_size=256,
            num_encoder_layers=3,
            num_decoder_layers=3,
            num_heads=4,
            intermediate_size=1024,
        ),
        "a Transformer sized for CPU training (Multi30k in ~20 min), 3+3 layers, H256/A4, 8k vocab",
        32,
    ),
    "transformer_base": (
        "seq2seq",
        dict(
            vocab_size=37000,
            hidden_size=512,
            num_encoder_layers=6,
            num_decoder_layers=6,
            num_heads=8,
            intermediate_size=2048,
        ),
        "Transformer base (Vaswani et al., 2017), 6+6 layers, H512/A8, shared 37k vocab",
        128,
    ),
}

PRESETS = {
    name: Preset(name, family, config, description, seq_length)
    for name, (family, config, description, seq_length) in _PRESETS.items()
}


def list_presets(family=None):
    """Names of the presets, optionally only those of one family."""
    return [name for name, preset in PRESETS.items() if family in (None, preset.family)]


def get_preset(name, family=None):
    """The `Preset` called `name`; a clear error if unknown or of another family."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if family is not None and preset.family != family:
        raise ValueError(
            f"preset {name!r} is a {preset.family} model; {family} presets are: "
            + ", ".join(list_presets(family))
        )
    return preset


def parameter_count(preset, embeddings=True):
    """Parameters of the preset's backbone, counted from its config.

    BERT counts the encoder with its pooler (as "BERT-Base, 110M" does), GPT
    the decoder with its tied output layer, seq2seq both stacks and the shared
    embedding. `embeddings=False` leaves out token and position embeddings
    (the N of the FLOPs formulas).
    """
    return count_parameters(preset.family, preset.config, embeddings)


def count_parameters(family, config, embeddings=True):
    """Parameters of a backbone of `family` with constructor arguments `config`
    (see `parameter_count`), computed without building it.

    Example:
    >>> count_parameters("bert", get_preset("bert_tiny").config) == parameter_count(get_preset("bert_tiny"))
    True
    """
    c = config
    d, ff = c["hidden_size"], c["intermediate_size"]
    norm = 2 * d
    attention = 4 * (d * d + d)
    feed_forward = d * ff + ff + ff * d + d
    encoder_layer = attention + feed_forward + 2 * norm
    if family == "bert":
        embedding = c["vocab_size"] * d + c.get("max_length", 512) * d
        other = c.get("type_vocab_size", 2) * d + norm + (d * d + d)  # segments, LN, pooler
        body = c["num_layers"] * encoder_layer
    elif family == "gpt":
        embedding = c["vocab_size"] * d + c.get("max_length", 1024) * d
        other = norm  # final LayerNorm
        body = c["num_layers"] * encoder_layer
    else:  # seq2seq: sinusoidal positions, shared token embedding, post-LN blocks
        embedding = c["vocab_size"] * d
        other = 0
        decoder_layer = encoder_layer + attention + norm
        body = c["num_encoder_layers"] * encoder_layer + c["num_decoder_layers"] * decoder_layer
    return body + other + (embedding if embeddings else 0)


def flops_per_token(preset, training=False, seq_length=None):
    """Matmul FLOPs per token: 2N + 4·L·T·d forward, three times that to train.

    N is the non-embedding parameter count, L the layers, T the sequence length
    and d the width (Kaplan et al., 2020; the attention term counts QKᵀ and AV).
    """
    c = preset.config
    seq_length = seq_length or preset.seq_length
    layers = c.get("num_layers") or (c["num_encoder_layers"] + c["num_decoder_layers"])
    forward = 2 * parameter_count(preset, embeddings=False) + 4 * layers * seq_length * c["hidden_size"]
    return 3 * forward if training else forward


def zoo_table():
    """The README's zoo table (markdown), computed from the presets."""
    rows = [
        "| preset | family | layers | hidden | heads | parameters | non-embedding | "
        "MFLOP/token (inference) | MFLOP/token (training) | at length |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in PRESETS.values():
        c = preset.config
        layers = c.get("num_layers") or f'{c["num_encoder_layers"]}+{c["num_decoder_layers"]}'
        rows.append(
            f"| `{preset.name}` | {preset.family} | {layers} | {c['hidden_size']} | "
            f"{c['num_heads']} | {parameter_count(preset) / 1e6:.1f}M | "
            f"{parameter_count(preset, embeddings=False) / 1e6:.1f}M | "
            f"{flops_per_token(preset) / 1e6:.1f} | "
            f"{flops_per_token(preset, training=True) / 1e6:.1f} | {preset.seq_length} |"
        )
    return "\n".join(rows)
