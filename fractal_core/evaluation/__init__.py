"""Measuring: metrics, the method comparison, gold selection, inter-annotator agreement."""
