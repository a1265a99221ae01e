"""Drivers that ship with the core, registered through the public hooks."""
