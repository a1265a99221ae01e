"""Packed BCD and the 8-bit additive checksum shared by the Chinese meter protocols.

DL/T 645 and CJ/T 188 both store numbers as packed BCD, least significant byte first,
and both close a frame with the sum of its bytes mod 256; one implementation serves both.
"""

from __future__ import annotations


def sum8(data: bytes) -> int:
    """The arithmetic sum of ``data`` mod 256 (DL/T 645 §1.1 "CS", CJ/T 188 "CS")."""
    return sum(data) & 0xFF


def bcd_to_int(data: bytes) -> int:
    """The number stored in ``data`` as packed BCD, least significant byte first.

    Raises ``ValueError`` when a nibble is not a decimal digit (A..F).
    """
    value = 0
    for byte in reversed(data):
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError(f"not BCD: byte {byte:02X} in {data.hex(' ').upper()}")
        value = value * 100 + hi * 10 + lo
    return value


def int_to_bcd(value: int, nbytes: int) -> bytes:
    """``value`` as ``nbytes`` of packed BCD, least significant byte first.

    Raises ``ValueError`` for a negative value or one with more than ``2 * nbytes`` digits.
    """
    if value < 0 or value >= 10 ** (2 * nbytes):
        raise ValueError(f"{value} does not fit in {nbytes} BCD byte(s)")
    out = bytearray()
    for _ in range(nbytes):
        value, pair = divmod(value, 100)
        out.append((pair // 10) << 4 | pair % 10)
    return bytes(out)
