"""meterhub-mqtt: an MQTT uplink (readings, events, last will, commands) and Home Assistant
discovery for meterhub."""
