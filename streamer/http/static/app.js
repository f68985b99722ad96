// The viewer page: the streams, a WHEP player, the raw | restored compare view, live stats. No build step.
"use strict";

const params = new URLSearchParams(location.search);
const token = new URLSearchParams(location.hash.slice(1)).get("token");  // #token=… never reaches server logs
const VIEWS = ["restored", "raw", "side", "split"];
const askedView = params.get("view");  // an unknown ?view= (a typo, an old link) shows the restored stream
const state = { stream: params.get("stream"), view: VIEWS.includes(askedView) ? askedView : "restored", pc: null, session: null };
// What a person (or a test) can read: pictures shown, their size, the codec the browser decodes.
const streamerStats = { frames: 0, width: 0, height: 0, codec: null, fps: 0, view: null,
                        postedAt: null, connectedAt: null, firstFrameAt: null };
window.streamerStats = streamerStats;

const video = document.getElementById("video");
const canvas = document.getElementById("split");
const slider = document.getElementById("slider");

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

function whepPath(stream, view) {
  const suffix = { restored: "", raw: "/raw", side: "/compare", split: "/compare" }[view];
  return "/whep/" + encodeURIComponent(stream) + suffix;
}

async function stop() {
  if (state.session) {
    fetch(state.session, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    state.session = null;
  }
  if (state.pc) { state.pc.close(); state.pc = null; }
}

function gathered(pc, capMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, capMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function play() {
  await stop();
  document.getElementById("error").textContent = "";
  if (!state.stream) return;
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  Object.assign(streamerStats, { postedAt: null, connectedAt: null, firstFrameAt: null });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected" && streamerStats.connectedAt === null) streamerStats.connectedAt = performance.now();
  });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (event) => { video.srcObject = event.streams[0] || new MediaStream([event.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 2000);
  streamerStats.postedAt = performance.now();
  const response = await fetch(whepPath(state.stream, state.view), {
    method: "POST", body: pc.localDescription.sdp, headers: authHeaders({ "Content-Type": "application/sdp" }),
  });
  if (!response.ok) {
    document.getElementById("error").textContent = "WHEP: " + response.status + " " + (await response.text());
    return;
  }
  state.session = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  streamerStats.view = state.view;
}

// Split view: one composite picture (raw left, restored right, the same frame), drawn as one image
// whose left part comes from the raw half and right part from the restored half.
function drawSplit() {
  const half = video.videoWidth / 2, height = video.videoHeight;
  if (!half) return;
  if (canvas.width !== half || canvas.height !== height) { canvas.width = half; canvas.height = height; }
  const at = Math.round(half * slider.value / 100);
  const context = canvas.getContext("2d");
  if (at > 0) context.drawImage(video, 0, 0, at, height, 0, 0, at, height);
  if (at < half) context.drawImage(video, half + at, 0, half - at, height, at, 0, half - at, height);
  context.fillStyle = "#fff";
  context.fillRect(Math.max(0, at - 1), 0, 2, height);
}

let frameTimes = [];
function onFrame(now, metadata) {
  streamerStats.frames += 1;
  if (streamerStats.firstFrameAt === null && streamerStats.postedAt !== null) streamerStats.firstFrameAt = performance.now();
  streamerStats.width = metadata.width;
  streamerStats.height = metadata.height;
  frameTimes.push(now);
  frameTimes = frameTimes.filter((t) => now - t <= 2000);
  streamerStats.fps = frameTimes.length / 2;
  if (state.view === "split") drawSplit();
  video.requestVideoFrameCallback(onFrame);
}
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onFrame);

let dragging = false;
function dragTo(event) {
  const box = canvas.getBoundingClientRect();
  slider.value = Math.min(100, Math.max(0, 100 * (event.clientX - box.left) / box.width));
  drawSplit();
}
canvas.addEventListener("pointerdown", (event) => { dragging = true; canvas.setPointerCapture(event.pointerId); dragTo(event); });
canvas.addEventListener("pointermove", (event) => { if (dragging) dragTo(event); });
canvas.addEventListener("pointerup", () => { dragging = false; });
slider.addEventListener("input", drawSplit);

function showMode() {
  const split = state.view === "split";
  video.classList.toggle("offscreen", split);
  canvas.hidden = !split;
  slider.hidden = !split;
  document.getElementById("labels").hidden = !(split || state.view === "side");
  for (const button of document.querySelectorAll("#modes button")) {
    button.classList.toggle("active", button.dataset.view === state.view);
  }
}

for (const button of document.querySelectorAll("#modes button")) {
  button.addEventListener("click", () => {
    const before = state.view;
    state.view = button.dataset.view;
    showMode();
    const composite = (view) => view === "side" || view === "split";
    if (!(composite(before) && composite(state.view))) play();  // side <-> split: same picture
  });
}

function stat(name, value) {
  const item = document.createElement("div");
  const term = document.createElement("dt");
  const detail = document.createElement("dd");
  term.textContent = name;
  detail.textContent = value;
  item.append(term, detail);
  return item;
}

async function refresh() {
  let streams = [];
  try {
    const response = await fetch("/api/streams", { headers: authHeaders() });
    streams = (await response.json()).streams || [];
  } catch (error) {
    document.getElementById("error").textContent = "API: " + error;
    return;
  }
  const nav = document.getElementById("streams");
  nav.replaceChildren(...streams.map((stream) => {
    const link = document.createElement("a");
    link.href = "?stream=" + encodeURIComponent(stream.name);
    link.textContent = stream.name;
    link.classList.toggle("active", stream.name === state.stream);
    const badge = document.createElement("span");
    badge.className = "state";
    badge.textContent = stream.state;
    link.append(badge);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      state.stream = stream.name;
      history.replaceState(null, "", "?stream=" + encodeURIComponent(stream.name));
      play();
    });
    return link;
  }));
  if (!state.stream && streams.length) { state.stream = streams[0].name; play(); }
  const current = streams.find((stream) => stream.name === state.stream);
  if (state.pc) {
    const report = await state.pc.getStats();
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video" && entry.codecId) {
        const codec = report.get(entry.codecId);
        if (codec) streamerStats.codec = codec.mimeType;
      }
    });
  }
  const items = [stat("shown", streamerStats.fps.toFixed(1) + " fps"),
                 stat("size", streamerStats.width + "×" + streamerStats.height),
                 stat("codec", streamerStats.codec || "–")];
  if (current) {
    const share = current.frames_out ? (100 * current.frames_restored / current.frames_out).toFixed(0) + " %" : "–";
    const engine = typeof current.engine === "string" ? current.engine : JSON.stringify(current.engine);
    const drops = current.readers.reduce((sum, reader) => sum + reader.dropped, 0);
    items.push(stat("stream", current.fps + " fps"), stat("engine", String(engine)), stat("restored", share),
               stat("viewers", String(current.readers.length)), stat("drops", String(drops)),
               stat("state", current.state));
  }
  document.getElementById("stats").replaceChildren(...items);
}

window.addEventListener("pagehide", stop);
showMode();
refresh();
if (state.stream) play();
setInterval(refresh, 1000);
