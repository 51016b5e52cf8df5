"""tfpconv: PCONV pattern + connectivity pruning for Keras, and fast pattern convolutions in TFLite."""

__version__ = "0.1.0"
