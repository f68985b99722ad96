"""ZeroMQ frame taps: a camera's raw and restored frames published for analytics downstream.

``wire`` is the versioned message format, ``publisher`` the non-blocking publishing side (one bounded
queue per tap, one sender thread per socket), ``client`` the typed consumer.
"""
