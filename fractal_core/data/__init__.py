"""Responses in and out: records, reading and validating files, text segmentation, output files, the demo set."""
