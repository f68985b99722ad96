"""The in-process RTSP server that viewers (ffplay, VLC, NVRs, GStreamer) play restored streams from."""
