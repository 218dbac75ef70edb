"""Export for TF Serving (SavedModel taking raw text), TF Hub's BERT interface and TFLite.

    tfplm.export.saved_model(model, "serving")            # serving/NAME/VERSION/
    tfplm.export.hub(encoder, "hub/bert")                 # preprocessor/ + encoder/
    tfplm.export.tflite(model, "m.tflite", quantize="dynamic_int8")
    tfplm.export.export_model(model, "out", texts)        # all of them + export_report.json
"""

from tfplm.export.exporter import export_model
from tfplm.export.tfhub import hub
from tfplm.export.lite import TFLiteModel
from tfplm.export.lite import convert as tflite
from tfplm.export.serving import load, model_kind, saved_model

__all__ = ["TFLiteModel", "export_model", "hub", "load", "model_kind", "saved_model", "tflite"]
