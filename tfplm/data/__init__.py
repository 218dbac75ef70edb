"""Input data: readers for benchmark and bring-your-own files, and the tf.data
pipelines that tokenize them in the graph.

    dataset = tfplm.data.text_dataset(texts, labels, preprocessor=model.preprocessor, training=True)
"""

from tfplm.data.pipeline import text_dataset

__all__ = ["text_dataset"]
