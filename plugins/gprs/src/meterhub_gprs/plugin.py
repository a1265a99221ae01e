"""Entry point of the ``gprs`` plugin: the ``gdw1376.1`` uplink (registered once it exists)."""

from __future__ import annotations
