"""meterhub-plc: power-line carrier networks through a Q/GDW 1376.2 local communication module."""
