"""The delegate from Python: the library, the interpreter, timing, benchmarking and tuning."""
