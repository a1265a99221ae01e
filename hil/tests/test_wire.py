"""The virtual RS485 pair: what one port sends, every other port receives, and no echo."""

from __future__ import annotations

import serial

from meterhub_hil.wire import VirtualPair


def _read(port: serial.Serial, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = port.read(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_every_other_port_hears_a_sender_byte_for_byte():
    with VirtualPair(3) as pair:
        ports = [serial.Serial(p, timeout=0.5) for p in pair.paths]
        data = bytes(range(256))
        ports[0].write(data)
        assert _read(ports[1], 256) == data
        assert _read(ports[2], 256) == data
        ports[0].timeout = 0.1
        assert ports[0].read(1) == b""  # a transmitter does not hear itself
        for p in ports:
            p.close()


def test_a_simulators_port_joins_the_pair(tmp_path):
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    with VirtualPair(1) as pair:
        pair.attach(os.ttyname(slave))
        adapter = serial.Serial(pair.paths[0], timeout=0.5)
        adapter.write(b"\x68\x16")
        import select

        assert select.select([master], [], [], 1.0)[0]
        assert os.read(master, 16) == b"\x68\x16"
        os.write(master, b"\xfe\x68")
        assert _read(adapter, 2) == b"\xfe\x68"
        adapter.close()
    os.close(master)
    os.close(slave)
