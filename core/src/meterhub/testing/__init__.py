"""Helpers for tests of meterhub and of its plugins: real servers to test against, and a
terminal in memory for uplink plugins (:class:`MemoryTerminal`), without pytest."""

from .terminal import MemoryTerminal

__all__ = ["MemoryTerminal"]
