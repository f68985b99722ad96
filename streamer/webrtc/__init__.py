"""WebRTC: WHEP egress of the encoded streams (aiortc), signalling helpers."""
