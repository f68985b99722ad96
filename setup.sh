#!/usr/bin/env bash
# Installs streamer into ./.venv on Debian/Ubuntu.
#   bash setup.sh          runtime only (PyAV wheels carry FFmpeg; no system codecs needed)
#   bash setup.sh --dev    + the test peers (GStreamer RTSP server, ffmpeg, gst-launch, prometheus), training and lint tools
set -euo pipefail
cd "$(dirname "$0")"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "usage: bash setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages=()
python3 -c "import venv, ensurepip" 2>/dev/null || apt_packages+=(python3-venv python3-pip)
if [ "$dev" -eq 1 ]; then
  apt_packages+=(ffmpeg gstreamer1.0-tools gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
                 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
                 python3-gi chromium chromium-driver prometheus)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  missing=()
  for package in "${apt_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() {  # pip's and the build backend's chatter stays in a log, shown only when pip fails
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
pip_install --upgrade pip || true
if [ "$dev" -eq 1 ]; then
  # torch is for training/export tools only; this exact CPU build is what the tools were made with.
  .venv/bin/python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0" || true
  pip_install -e ".[dev,train]" || true
else
  pip_install -e . || true
fi
.venv/bin/python -c "import streamer, av, onnxruntime" || { echo "setup failed: streamer does not import" >&2; exit 1; }
echo "streamer installed in $(pwd)/.venv"
