"""Shipping a model folder: its model card (:mod:`~kdlib.export.card`), the HuggingFace export of a
BERT (:mod:`~kdlib.export.hf`), the ONNX export with its int8 copy and onnxruntime check
(:mod:`~kdlib.export.onnx`), and the deployment numbers (:mod:`~kdlib.export.deploy`).

Imports nothing heavy: the export modules load their libraries themselves."""
