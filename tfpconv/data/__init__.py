"""Datasets and reference models for examples, tests and benchmarks."""
