"""The HTTP server: health, metrics, API (and later the viewer page, WHEP/WHIP)."""
