"""tfplm: BERT, GPT and encoder-decoder Transformers for TensorFlow/Keras 3.

    import tfplm
    classifier = tfplm.models.BertClassifier.from_pretrained("minilm", num_classes=2)
    task = tfplm.tasks.get("glue/sst2", overrides="task.glue_dir=...")
    tfplm.export.saved_model(classifier, "serving")

`import tfplm` makes `tfplm.models`, `tfplm.tasks`, `tfplm.export` available and
registers every tfplm Keras class, so `keras.models.load_model` reads tfplm's
`.keras` files.
"""

__version__ = "0.1.0"

from tfplm import export, models, tasks  # noqa: E402

__all__ = ["export", "models", "tasks"]
