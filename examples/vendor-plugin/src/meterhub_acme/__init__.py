"""ACME's meterhub plugin (an example of a third-party plugin distribution)."""
