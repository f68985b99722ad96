"""The RTSP and HTTP servers: addresses, limits, authentication."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from streamer.config.base import StrictModel, check_model


# --------------------------------------------------------------------------------------------- servers
class RtspUserConfig(StrictModel):
    username: str = Field(min_length=1, max_length=128, description="User name")
    password: str = Field(min_length=1, max_length=256, description="Password")


class RtspAuthConfig(StrictModel):
    method: Literal["basic", "digest"] = Field("digest", description="HTTP authentication scheme for RTSP")
    realm: str = Field("streamer", min_length=1, max_length=128, description="Realm shown to viewers")
    users: list[RtspUserConfig] = Field(min_length=1, max_length=256, description="Accepted users")
    nonce_lifetime_s: float = Field(
        60.0, ge=1, le=3600,
        description="Digest: a nonce is accepted this long after its challenge, on its own connection only; "
        "later the client is asked again with stale=true (no new password prompt)",
    )
    max_failures: int = Field(
        5, ge=1, le=1000, description="Wrong passwords from one address within lockout_s that lock it out"
    )
    lockout_s: float = Field(
        30.0, ge=1, le=86400,
        description="How long an address that failed max_failures times is refused (403) without checking",
    )


class RtspServerConfig(StrictModel):
    enabled: bool = Field(True, description="Serve restored streams over RTSP")
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8554, ge=0, le=65535, description="TCP port (0 = any free port)")
    udp: bool = Field(True, description="Offer RTP over UDP unicast besides TCP interleaved")
    session_timeout_s: float = Field(60.0, ge=5, le=3600, description="Drop UDP sessions silent this long")
    viewer_queue: int = Field(64, ge=4, le=4096, description="Access units buffered per viewer before dropping")
    max_viewers: int = Field(64, ge=1, le=10000, description="Sessions playing at once")
    auth: RtspAuthConfig | None = Field(None, description="Require a user name and password")
    max_connections: int = Field(
        256, ge=1, le=100000,
        description="Control connections open at once; at the cap a new one evicts the idlest non-playing one",
    )
    max_connections_per_address: int = Field(
        128, ge=1, le=100000,
        description="Control connections from one address; at the cap its idlest non-playing one is evicted",
    )
    idle_timeout_s: float = Field(
        30.0, ge=1, le=3600, description="Close a connection that sends no request this long (unless it plays)"
    )
    request_timeout_s: float = Field(
        10.0, ge=1, le=300, description="Close a connection whose request is not complete this long after it began"
    )
    setup_timeout_s: float = Field(
        5.0, ge=1, le=120, description="End a session that was set up but not played within this long"
    )
    max_sessions_per_connection: int = Field(4, ge=1, le=64, description="Sessions one connection may set up")
    max_sessions_per_address: int = Field(
        64, ge=1, le=10000,
        description="Sessions from one address; at the cap its oldest not-yet-playing one is ended",
    )
    max_pending_sessions: int = Field(
        32, ge=1, le=10000,
        description="Sessions set up but not yet playing, all addresses; at the cap the oldest is ended",
    )


BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]{16,4096}=*$")  # RFC 6750 b64token, at least 16 characters


def check_bearer_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not BEARER_TOKEN.match(value.get_secret_value()):
        raise ValueError("must be 16 to 4096 characters from A-Z a-z 0-9 - . _ ~ + / (then '=' padding)")
    return value


class HttpAuthConfig(StrictModel):
    token: SecretStr | None = Field(
        None,
        description="Bearer token clients must send (Authorization: Bearer TOKEN): 16 to 4096 characters from "
        "A-Z a-z 0-9 - . _ ~ + / (then '=' padding); or use token_file",
    )
    token_file: str | None = Field(
        None, min_length=1, max_length=4096, description="File whose first line is the token (instead of token)"
    )
    realm: str = Field(
        "streamer", min_length=1, max_length=128, description="Realm named in the WWW-Authenticate challenge"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | SecretStr):
            raise ValueError("must be text: quote a token that YAML reads as a number or a date")
        return value

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        return check_bearer_token(value)

    @field_validator("realm")
    @classmethod
    def _realm_fits_a_header(cls, value: str) -> str:
        if not all(" " <= char <= "~" and char not in '"\\' for char in value):
            raise ValueError("must be printable ASCII without quotes or backslashes")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> HttpAuthConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give either token or token_file")
        if self.token_file is not None:
            self.bearer_token()  # an unreadable or malformed file is a configuration error, not a runtime one
        return self

    def bearer_token(self) -> str:
        """The token, read from token_file when that is how it was given."""
        if self.token is not None:
            return self.token.get_secret_value()
        path = Path(self.token_file or "").expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"token_file: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        token = lines[0].strip() if lines else ""
        if not BEARER_TOKEN.match(token):
            raise ValueError(
                f"token_file: the first line of {path} must be 16 to 4096 characters from A-Z a-z 0-9 - . _ ~ + / "
                "(then '=' padding)"
            )
        return token


class HttpServerConfig(StrictModel):
    enabled: bool = Field(True, description="Serve /healthz, /metrics and the API")
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port)")
    auth: HttpAuthConfig | None = Field(
        None, description="Require a bearer token on every path except /healthz"
    )
    max_connections: int = Field(256, ge=1, le=10000, description="HTTP connections open at once; more are refused")
    max_connections_per_address: int = Field(
        32, ge=1, le=10000, description="HTTP connections open at once from one client address"
    )
    idle_timeout_s: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="Close a connection that has not completed a request this long after it opened or after its "
        "last response (idle keep-alive, silent and half-sent requests)",
    )
    max_url_bytes: int = Field(4096, ge=256, le=65536, description="Longest request target (path and query)")
    max_header_bytes: int = Field(8190, ge=256, le=65536, description="Longest header field (name and value)")
    max_headers: int = Field(64, ge=8, le=1024, description="Most header fields in one request")
    max_body_bytes: int = Field(
        65536, ge=0, le=16 * 1024 * 1024, description="Largest request body; a longer Content-Length gets 413"
    )


ICE_URL = re.compile(r"^(stun|stuns|turn|turns):[^\s?:]+(:[0-9]{1,5})?(\?transport=(udp|tcp))?$")


class IceServerConfig(StrictModel):
    urls: list[str] = Field(
        min_length=1, max_length=8,
        description="stun:host[:port] or turn:host[:port][?transport=udp|tcp] (aiortc uses one STUN and one TURN)",
    )
    username: str | None = Field(None, max_length=256, description="TURN user name")
    credential: SecretStr | None = Field(None, description="TURN password (never shown in the API or logs)")

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not ICE_URL.match(url):
                raise ValueError(f"{url!r} must look like stun:host[:port] or turn:host[:port][?transport=udp|tcp]")
        return value


class WebRtcServerConfig(StrictModel):
    enabled: bool = Field(True, description="Serve streams over WebRTC (WHEP) on the HTTP server")
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list, max_length=4,
        description="STUN/TURN servers used by the server and advertised to players (Link headers); none by "
        "default: no public STUN server is contacted",
    )
    ice_host_addresses: list[str] = Field(
        default_factory=list, max_length=16,
        description="Addresses offered as ICE host candidates; empty = every non-loopback interface address "
        "(set the address viewers reach, e.g. the Docker host's, or 127.0.0.1 for this machine only)",
    )
    ice_udp_ports: list[int] | None = Field(
        None, min_length=2, max_length=2,
        description="[first, last]: bind ICE host candidates on UDP ports in this range (a firewall or Docker "
        "port mapping: one port per session and address); no STUN server-reflexive candidates then. Default: "
        "ephemeral ports",
    )
    max_sessions: int = Field(32, ge=1, le=1000, description="WebRTC viewers at once (all streams); more get 503")
    viewer_queue: int = Field(
        64, ge=4, le=4096,
        description="Access units buffered per WebRTC viewer; a viewer that falls behind drops to the next keyframe",
    )
    connect_timeout_s: float = Field(
        15.0, ge=1, le=300, description="End a WebRTC session whose ICE/DTLS connection is not up within this long"
    )

    @field_validator("ice_host_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        return value


    @field_validator("ice_udp_ports")
    @classmethod
    def _port_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not 1024 <= value[0] <= value[1] <= 65535:
            raise ValueError("must be [first, last] with 1024 <= first <= last <= 65535")
        return value

    @property
    def udp_ports(self) -> tuple[int, int] | None:
        return (self.ice_udp_ports[0], self.ice_udp_ports[1]) if self.ice_udp_ports else None


class JobsConfig(StrictModel):
    """Offline restoration jobs (``/api/v1/jobs``): every frame of an uploaded file through the full model,
    in a child process at the lowest CPU priority, so that live cameras keep the compute they need."""

    enabled: bool = Field(
        True,
        description="Serve /api/v1/jobs (behind server.http.auth like the rest of /api; jobs run at idle CPU "
        "priority, uploads and the queue are bounded)",
    )
    directory: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Where uploads and results are kept (created 0700, one sub-folder per job); default: a "
        "fresh private folder under the system temp folder, removed when the server stops",
    )
    max_upload_bytes: int = Field(
        2 * 1024**3, ge=1024, le=64 * 1024**3, description="Largest uploaded file; a longer upload gets 413"
    )
    max_queued: int = Field(8, ge=1, le=1000, description="Jobs waiting to run; a submission beyond gets 429")
    max_running: int = Field(1, ge=1, le=16, description="Jobs restored at once (one child process each)")
    result_ttl_s: float = Field(
        3600.0, ge=1, le=7 * 86400,
        description="A finished job's files are removed this long after it ended (the job then shows as expired)",
    )
    allowed_paths: list[str] = Field(
        default_factory=list, max_length=64,
        description="Server folders from which {\"path\": ...} submissions are taken (symlinks resolved; "
        "anything outside gets 403); empty = uploads only",
    )
    engine: Literal["auto", "cpu", "tensorrt", "cuda", "passthrough"] = Field(
        "auto", description="Backend of the jobs, as a camera's engine.type (auto = TensorRT, else the CPU)"
    )
    model: str | None = Field(None, max_length=4096, description="Model of the jobs, as engine.model (default: lite)")
    int8: bool = Field(True, description="CPU: run the model's int8 twin, as engine.int8")
    threads: int = Field(
        1, ge=1, le=64,
        description="CPU inference threads of a job (its decode and encode threads are its own too)",
    )
    nice: int = Field(19, ge=0, le=19, description="Niceness of a job's process (19 = lowest priority)")
    yield_to_live: bool = Field(
        True, description="Pause the jobs (SIGSTOP) while a live camera sends frames unrestored for want of compute; "
        "they go on once the cameras have kept up for yield_hold_s (and run at least 10 % of the time)",
    )
    yield_hold_s: float = Field(2.0, ge=0.1, le=60, description="Seconds the cameras must keep up before jobs resume")
    idle_class: bool = Field(
        True,
        description="Linux: also run a job under SCHED_IDLE, so that it gets only CPU time nothing else wants",
    )

    @field_validator("model")
    @classmethod
    def _model_exists_when_named(cls, value: str | None) -> str | None:
        return check_model(value)

    @field_validator("allowed_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for folder in value:
            if not Path(folder).expanduser().is_absolute():
                raise ValueError(f"{folder!r} must be an absolute path")
        return value


class InferenceConfig(StrictModel):
    shared: bool = Field(
        True, description="One engine per model and device for the whole process, every camera's windows "
        "scheduled on it in turn (false: an engine per camera, each with its engine.threads)",
    )
    threads: int = Field(
        0, ge=0, le=256, description="CPU inference threads of the shared engines, for the whole process (0 = all "
        "cores); a camera's engine.threads applies only when shared is false",
    )
    max_batch: int = Field(
        0, ge=0, le=64, description="Windows of different cameras (same model and frame size) restored in one "
        "call (0 = the backend's choice: 1 on the CPU, where a batch costs as much per window, 8 with PyTorch CUDA)",
    )


class ServerConfig(StrictModel):
    rtsp: RtspServerConfig = Field(default_factory=RtspServerConfig, description="RTSP server")
    http: HttpServerConfig = Field(default_factory=HttpServerConfig, description="HTTP server")
    webrtc: WebRtcServerConfig = Field(
        default_factory=WebRtcServerConfig, description="WebRTC (WHEP) viewers, served by the HTTP server"
    )
    jobs: JobsConfig = Field(
        default_factory=JobsConfig, description="Restoration jobs (/api/v1/jobs), served by the HTTP server"
    )
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description="The shared inference service (engines shared by cameras)"
    )
