"""The pure core: the model, planning, decoding, bus time, line protocol, payloads, units.

Nothing here does I/O or imports an I/O library (pymodbus, pyserial, sqlite3, MQTT, HTTP),
and nothing here imports another part of sensegate.
"""
