"""The master station (head-end): many concentrators over TCP, their data stored."""
