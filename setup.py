"""tfplm: a TensorFlow/Keras model zoo for pre-trained language models."""

from setuptools import setup

setup(
    name="tfplm",
    version="0.1.0",
    description="BERT, GPT and encoder-decoder Transformers for TensorFlow/Keras 3: "
    "pretraining, fine-tuning and export for TF Serving and TFLite.",
    python_requires=">=3.10",
    # The zoo, tasks and exporter live in top-level folders but install only as
    # subpackages of tfplm, so a user's own `models.py` never shadows them.
    packages=[
        "tfplm",
        "tfplm.layers",
        "tfplm.tokenizers",
        "tfplm.data",
        "tfplm.training",
        "tfplm.models",
        "tfplm.models.checkpoints",
        "tfplm.tasks",
        "tfplm.export",
    ],
    package_dir={
        "tfplm": "tfplm",
        "tfplm.models": "models",
        "tfplm.tasks": "tasks",
        "tfplm.export": "export",
    },
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "keras>=3.10,<4",
        "keras-nlp>=0.32,<0.33",
        "tensorflow-datasets>=4.9,<5",
        "absl-py>=2.0",
        "tensorboard>=2.20",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        # BLEU as the field reports it (translation's evaluation, with its signature string).
        "sacrebleu>=2.4,<3",
        "numpy>=1.26",
        # Warmup requests (PredictionLog protos) in every TF Serving export.
        "tensorflow-serving-api>=2.21,<2.22",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "scipy>=1.11",
            "scikit-learn>=1.4",
            # The reference for entity-level F1 (token tagging's metric is tested against it).
            "seqeval>=1.2",
            "tokenizers>=0.20",
            # TF Hub's own BERT code (tf_keras) runs against our TF Hub export in a test.
            "tensorflow-hub>=0.16,<0.17",
            "tf-keras>=2.21,<2.22",
            # The stock LiteRT interpreter proves the "ids" TFLite flavour needs builtin ops only.
            "ai-edge-litert>=2.3,<2.4",
            # tests/test_notebook.py runs a notebook in a real Jupyter kernel.
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
        # The other side of tools/benchmark_serving.py (and of the reference fixtures):
        # never imported by tfplm itself. The CPU build of PyTorch is enough.
        # torch pulls in a setuptools without pkg_resources, which tensorflow-hub (test) imports.
        # sentence-transformers makes the sentence-embedding reference fixtures (tools/).
        "reference": ["torch>=2.4", "transformers>=4.45", "setuptools<81", "sentence-transformers>=3"],
    },
)
