"""The shared inference service: one engine per model and device, a scheduler per device (see
``service`` and ``scheduler``)."""

from streamer.inference.scheduler import DeadlineExpired, DeviceScheduler, deadline
from streamer.inference.service import EngineClient, InferenceService

__all__ = ["DeadlineExpired", "DeviceScheduler", "EngineClient", "InferenceService", "deadline"]
