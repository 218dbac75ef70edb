"""Export for TF Serving (SavedModel taking raw text), TF Hub's BERT interface and TFLite."""

from tfplm.export.serving import load, model_kind, saved_model

__all__ = ["load", "model_kind", "saved_model"]
