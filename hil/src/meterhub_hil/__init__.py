"""meterhub-hil: the hardware-in-the-loop bench of meterhub (instruments, pulse generator, virtual bench)."""
