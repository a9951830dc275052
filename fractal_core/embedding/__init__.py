"""Sentence vectors: the encoders (torch and int8 ONNX), the on-disk cache, mapped matrices, records to bags."""
