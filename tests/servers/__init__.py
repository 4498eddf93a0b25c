"""Loopback HTTP servers for the download tests: a real nginx and a fault-injecting one."""
