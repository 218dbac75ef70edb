"""Converts a BERT or GPT-2 checkpoint to tfplm's format and prints what it mapped.

    python tools/convert_checkpoint.py --input=path/to/hf_bert --output=/tmp/bert
    python tools/convert_checkpoint.py --input=uncased_L-12_H-768_A-12 --output=/tmp/bert \
        --model=bert --do_lower_case=true
    python tools/convert_checkpoint.py --input=path/to/keras_nlp_gpt2_preset --output=/tmp/gpt2

Reads Hugging Face (safetensors), Google BERT (bert_model.ckpt) and keras-nlp
preset directories (and tfplm's own); the format is detected. Pickled
checkpoints (pytorch_model.bin) are refused. The output loads with
`BertEncoder/BertPretrainer/BertClassifier/GPT.from_pretrained(output)`.
"""

import _cli

_cli.quiet()

from absl import flags  # noqa: E402

from tfplm.models.pretrained import convert_checkpoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Checkpoint directory to convert.", required=True)
flags.DEFINE_string("output", None, "Directory to write tfplm's format to.", required=True)
flags.DEFINE_enum("model", None, ["bert", "gpt2"], "Insist on this model family (default: detect).")
flags.DEFINE_enum(
    "do_lower_case", None, ["true", "false"],
    "BERT vocabulary casing; default: the checkpoint's tokenizer config, or for Google "
    "checkpoints the directory name (uncased_* / cased_*).",
)
flags.DEFINE_integer("seq_length", None, "Length of the BERT preprocessor to record (default 128).")


def main(argv):
    del argv
    lower = None if FLAGS.do_lower_case is None else FLAGS.do_lower_case == "true"
    report = convert_checkpoint(
        FLAGS.input, FLAGS.output, family=FLAGS.model, do_lower_case=lower, seq_length=FLAGS.seq_length
    )
    print(report.summary())
    print(f"wrote {report.model_class} to {FLAGS.output}")


if __name__ == "__main__":
    _cli.run(main)
