"""meterhub-infrared: optical-port reading with IEC 62056-21 and DL/T 645 over infrared."""
