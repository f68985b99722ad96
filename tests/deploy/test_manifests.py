"""The deployment files agree with the code: the configurations they carry are valid streamer
configurations, the worker count matches the shard count, and the images run as a user, not root.
(Their schemas are checked by hadolint, check-jsonschema and kubernetes-validate in .ci/run.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.config import build_config, read_config_data

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_compose_streamer_config_is_valid() -> None:
    config = build_config(read_config_data(str(ROOT / "deploy" / "compose" / "streamer.yaml")), environ={})
    assert all(any(sink.type == "rtsp_publish" for sink in camera.sinks) for camera in config.cameras)


def test_configmap_streamer_config_is_valid_and_publishes_every_camera_to_the_origin() -> None:
    data = yaml.safe_load(find("ConfigMap", "streamer-config")["data"]["streamer.yaml"])
    config = build_config(data, environ={})
    assert config.cameras
    for camera in config.cameras:
        urls = [sink.url for sink in camera.sinks if sink.type == "rtsp_publish"]
        assert urls == [f"rtsp://mediamtx-origin.streamer.svc:8554/{camera.name}"]


def test_statefulset_shards_match_replicas_and_probes_use_the_health_endpoints() -> None:
    workers = find("StatefulSet", "streamer")
    container = workers["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["STREAMER_SHARD"] == "auto" and int(env["STREAMER_SHARDS"]) == workers["spec"]["replicas"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert workers["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


@pytest.mark.parametrize("name", ["Dockerfile.x86", "Dockerfile.jetson"])
def test_images_run_as_a_user_with_a_health_check(name: str) -> None:
    text = (ROOT / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert "/healthz" in re.search(r"^HEALTHCHECK.*(?:\n\s+.*)*", text, flags=re.MULTILINE).group(0)  # type: ignore[union-attr]
    assert re.search(r"^VOLUME .*\.cache/streamer", text, flags=re.MULTILINE)
