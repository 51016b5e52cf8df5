"""The Keras side: pruning callbacks, one-shot pruning, summary, layer selection, Keras 2/3."""
