"""Helpers for tests of meterhub and of its plugins: real servers to test against, a
terminal in memory for uplink plugins (:class:`MemoryTerminal`), and a guard for tests that
name today (:func:`clear_of_midnight`), without pytest."""

from .clock import clear_of_midnight
from .terminal import MemoryTerminal

__all__ = ["MemoryTerminal", "clear_of_midnight"]
