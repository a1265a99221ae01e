"""Sans-I/O wire protocol codecs (bytes in, attrs values out) and their data tables."""
