"""``tfpconv.Interpreter``: LiteRT's interpreter with the tfpconv delegate applied."""

from __future__ import annotations

import os
from typing import Any

from ai_edge_litert.interpreter import Interpreter as _LiteRtInterpreter

from tfpconv.runtime.delegate import claimed_nodes, load_delegate, packed_weight_bytes


class Interpreter(_LiteRtInterpreter):
    """A LiteRT interpreter with the tfpconv delegate applied.

    Args:
      model_path / model_content: the .tflite model (one of them), e.g. from ``tfpconv.convert``.
      num_threads: threads for TFLite's kernels and for the delegate's pattern convolutions.
      use_delegate: False gives a plain LiteRT interpreter (for comparisons).
      **delegate_options: ``log_level``, ``isa``, ``claim`` (see :func:`load_delegate`).

    ``delegated_nodes()`` tells which CONV_2D nodes run on the delegate. The delegate is kept in
    ``self.delegate`` for the interpreter's lifetime.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        model_content: bytes | None = None,
        num_threads: int = 1,
        use_delegate: bool = True,
        **delegate_options: Any,
    ) -> None:
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        self.delegate = (
            load_delegate(num_threads=num_threads, **delegate_options) if use_delegate else None
        )
        super().__init__(
            model_path=os.fspath(model_path) if model_path is not None else None,
            model_content=model_content,
            num_threads=num_threads,
            experimental_delegates=[self.delegate] if self.delegate is not None else None,
        )

    def delegated_nodes(self) -> list[int]:
        """Indices of the CONV_2D nodes that run on the tfpconv delegate ([] without it)."""
        return claimed_nodes(self.delegate) if self.delegate is not None else []

    def packed_weight_bytes(self) -> int:
        """Bytes of the delegate's packed weights (0 without it)."""
        return packed_weight_bytes(self.delegate) if self.delegate is not None else 0

    def delegated_ops(self) -> list[dict[str, Any]]:
        """The ``_get_ops_details()`` entries of the operators the delegate runs."""
        nodes = set(self.delegated_nodes())
        return [op for op in self._get_ops_details() if op["index"] in nodes]
