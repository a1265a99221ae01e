"""Helpers for tests of meterhub and of its plugins: real servers to test against, without pytest."""
