"""Export for TF Serving (SavedModel taking raw text), TF Hub's BERT interface and TFLite.

    tfplm.export.saved_model(model, "serving")            # serving/NAME/VERSION/
    tfplm.export.hub(encoder, "hub/bert/1")               # preprocessor/ + encoder/
    tfplm.export.tflite(model, "m.tflite", quantize="dynamic_int8")
    tfplm.export.export_model(model, "out", examples)     # all of them + export_report.json

What each export takes and returns is the model's task type's serving head
(`tfplm.tasks.serving_head`).
"""

from tfplm.export.exporter import FORMATS, export_model
from tfplm.export.lite import TFLiteModel
from tfplm.export.lite import convert as tflite
from tfplm.export.serving import load, saved_model
from tfplm.export.tfhub import hub

__all__ = ["FORMATS", "TFLiteModel", "export_model", "hub", "load", "saved_model", "tflite"]
