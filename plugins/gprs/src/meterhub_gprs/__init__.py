"""meterhub's Q/GDW 1376.1 uplink: the concentrator's side of the master-station link,
over a cellular modem driven by AT commands or over plain TCP."""
