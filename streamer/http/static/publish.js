// Publishes this device's camera to /whip/<camera> (WHIP). ?camera=NAME starts at once; #token=TOKEN.
"use strict";

const params = new URLSearchParams(location.search);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const publishState = { status: null, connection: "new", error: null };
window.publishState = publishState;
let pc = null, session = null;

function say(text) { document.getElementById("status").textContent = text; }

async function stop() {
  if (session) {
    fetch(session, { method: "DELETE", headers: token ? { Authorization: "Bearer " + token } : {} }).catch(() => {});
    session = null;
  }
  if (pc) { pc.close(); pc = null; }
}

async function publish(camera) {
  await stop();
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: false });
  document.getElementById("preview").srcObject = media;
  pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of media.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  pc.addEventListener("connectionstatechange", () => {
    publishState.connection = pc.connectionState;
    say("connection " + pc.connectionState);
  });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    setTimeout(resolve, 2000);
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
  });
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/whip/" + encodeURIComponent(camera), { method: "POST", body: pc.localDescription.sdp, headers });
  publishState.status = response.status;
  if (response.status !== 201) {
    publishState.error = await response.text();
    say("WHIP: " + response.status + " " + publishState.error);
    return;
  }
  session = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

document.getElementById("camera").value = params.get("camera") || "";
document.getElementById("start").addEventListener("click", () => publish(document.getElementById("camera").value));
document.getElementById("stop").addEventListener("click", stop);
window.addEventListener("pagehide", stop);
if (params.get("camera")) publish(params.get("camera")).catch((error) => { publishState.error = String(error); say(String(error)); });
