"""Input data: readers for benchmark and bring-your-own files, and the tf.data
pipelines that tokenize them in the graph.

* `pipeline`: sharding across input pipelines, length buckets, `text_dataset`;
* `text`, `text_files`, `glue`: reading raw text, labelled files, GLUE;
* pretraining from raw text: `documents` (text files → windows of tokenized
  documents), `bert_instances` (google-research/bert's masked-LM + NSP
  instances), `pretraining_records` (its TFRecords, written and read),
  `masking` (BERT batches masked in the pipeline), `causal_lm` (GPT blocks).

    dataset = tfplm.data.text_dataset(texts, labels, preprocessor=model.preprocessor, training=True)
"""

from tfplm.data.pipeline import text_dataset

__all__ = ["text_dataset"]
