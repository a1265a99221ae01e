"""meterhub: a framework for remote centralized meter reading."""

from .hookspecs import hookimpl

__all__ = ["hookimpl"]
