"""Unstable routes, kept apart: token-level fine-tuning of the encoder and embedding on a Ray cluster."""
