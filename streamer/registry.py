"""The one list of streams, keyed by name: every server asks it per request (as MediaMTX's path manager).

The RTSP server, WHEP and WHIP, the HTTP API and the metrics collectors hold this registry (or a live view
of it), never a copy: a camera added or removed at run time is seen by all of them at their next request.
Servers that hold sessions of a stream register ``on_remove`` to end them when the stream goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.hub import StreamHub
    from streamer.pipeline import CameraPipeline
    from streamer.sources.whip import WhipSource


class StreamRegistry:
    def __init__(self, pipelines: list[CameraPipeline] | None = None) -> None:
        self._pipelines: dict[str, CameraPipeline] = {}
        self._on_remove: list[Callable[[str], object]] = []
        for pipeline in pipelines or []:
            self.add(pipeline)
        self.hubs: Mapping[str, StreamHub] = _HubView(self)
        self.whip_sources: Mapping[str, WhipSource] = _WhipView(self)

    def __contains__(self, name: object) -> bool:
        return name in self._pipelines

    def __iter__(self) -> Iterator[CameraPipeline]:
        """The pipelines now, in the order they were added (a snapshot: safe to change the registry meanwhile)."""
        return iter(list(self._pipelines.values()))

    def __len__(self) -> int:
        return len(self._pipelines)

    def get(self, name: str) -> CameraPipeline | None:
        return self._pipelines.get(name)

    def names(self) -> list[str]:
        return list(self._pipelines)

    def add(self, pipeline: CameraPipeline) -> None:
        if pipeline.name in self._pipelines:
            raise KeyError(f"a stream named {pipeline.name!r} exists")
        self._pipelines[pipeline.name] = pipeline

    def remove(self, name: str) -> CameraPipeline | None:
        """Forget the stream and tell every server holding its sessions (they end them)."""
        pipeline = self._pipelines.pop(name, None)
        if pipeline is not None:
            for callback in list(self._on_remove):
                callback(name)
        return pipeline

    def on_remove(self, callback: Callable[[str], object]) -> None:
        self._on_remove.append(callback)

    def hub(self, path: str) -> StreamHub | None:
        """The hub of ``<camera>`` (restored) or of one of its views (``<camera>/raw``, ``<camera>/compare``)."""
        camera, _, view = path.partition("/")
        pipeline = self._pipelines.get(camera)
        if pipeline is None:
            return None
        if not view:
            return pipeline.hub
        extra = pipeline.views.views.get(view)
        return extra.hub if extra is not None else None


class _HubView(Mapping[str, "StreamHub"]):
    """Every hub by path, read through the registry at each access."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    def __getitem__(self, path: str) -> StreamHub:
        hub = self._registry.hub(path)
        if hub is None:
            raise KeyError(path)
        return hub

    def __iter__(self) -> Iterator[str]:
        for pipeline in self._registry:
            yield pipeline.name
            yield from (view.hub.name for view in pipeline.views.views.values())

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _WhipView(Mapping[str, "WhipSource"]):
    """The cameras whose source takes WHIP publishers, by name."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    def _source(self, name: object) -> WhipSource | None:
        from streamer.sources.whip import WhipSource

        pipeline = self._registry.get(name) if isinstance(name, str) else None
        return pipeline.source if pipeline is not None and isinstance(pipeline.source, WhipSource) else None

    def __getitem__(self, name: str) -> WhipSource:
        source = self._source(name)
        if source is None:
            raise KeyError(name)
        return source

    def __iter__(self) -> Iterator[str]:
        return iter([name for name in self._registry.names() if self._source(name) is not None])

    def __contains__(self, name: object) -> bool:
        return self._source(name) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self)
