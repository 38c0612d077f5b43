// WHIP (RFC 9725) publish and WHEP play for the browser. Plain ES module, no build step.
//
//   import { publish, play } from "/static/js/webrtc.js";
//   const session = await publish("/whip/room-1", hostToken, mediaStream);
//   const viewing = await play("/whep/room-1", videoElement);
//   await session.stop();
//
// One POST carries the whole offer (the server does not take trickle ICE, RFC 9725
// section 4.3.2 allows that), so we wait for ICE gathering before sending it.

const ICE_GATHERING_TIMEOUT_MS = 2000;

function waitForIceGathering(peerConnection, timeoutMs) {
  if (peerConnection.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      peerConnection.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (peerConnection.iceGatheringState === "complete") done();
    };
    // Without a STUN server gathering is quick; past the timeout, send what we have.
    const timer = setTimeout(done, timeoutMs);
    peerConnection.addEventListener("icegatheringstatechange", check);
  });
}

async function negotiate(peerConnection, url, token) {
  await peerConnection.setLocalDescription(await peerConnection.createOffer());
  await waitForIceGathering(peerConnection, ICE_GATHERING_TIMEOUT_MS);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, {
    method: "POST",
    headers,
    body: peerConnection.localDescription.sdp,
  });
  if (response.status !== 201) {
    const reason = (await response.text()).trim();
    const error = new Error(`${url}: ${response.status} ${reason}`);
    error.status = response.status;
    error.retryAfterSeconds = Number(response.headers.get("Retry-After")) || null;
    throw error;
  }
  // The Location may be relative: resolve it against the URL we posted to.
  const requestUrl = new URL(url, globalThis.location?.href);
  const resourceUrl = new URL(response.headers.get("Location"), requestUrl).href;
  await peerConnection.setRemoteDescription({ type: "answer", sdp: await response.text() });
  return resourceUrl;
}

function makeSession(peerConnection, resourceUrl, token) {
  let stopped = false;
  return {
    peerConnection,
    resourceUrl,
    // Ends the session: DELETE on its resource (RFC 9725 section 4.2), then close.
    async stop() {
      if (stopped) return;
      stopped = true;
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      try {
        await fetch(resourceUrl, { method: "DELETE", headers });
      } finally {
        peerConnection.close();
      }
    },
  };
}

// The relay forwards the host's encoded video to every viewer, so the host must send
// the codec the server relays (VP8); the server's answer enforces it, this states it.
function preferCodec(transceiver, kind, mimeType) {
  if (!transceiver.setCodecPreferences || !globalThis.RTCRtpSender?.getCapabilities) return;
  const codecs = RTCRtpSender.getCapabilities(kind)?.codecs ?? [];
  const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType);
  const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== mimeType);
  if (preferred.length) transceiver.setCodecPreferences([...preferred, ...rest]);
}

export async function publish(url, token, mediaStream, { iceServers = [] } = {}) {
  const peerConnection = new RTCPeerConnection({ iceServers });
  for (const track of mediaStream.getTracks()) {
    const transceiver = peerConnection.addTransceiver(track, {
      direction: "sendonly",
      streams: [mediaStream],
    });
    if (track.kind === "video") preferCodec(transceiver, "video", "video/vp8");
  }
  try {
    const resourceUrl = await negotiate(peerConnection, url, token);
    return makeSession(peerConnection, resourceUrl, token);
  } catch (error) {
    peerConnection.close();
    throw error;
  }
}

export async function play(url, videoElement, { iceServers = [] } = {}) {
  const peerConnection = new RTCPeerConnection({ iceServers });
  const stream = new MediaStream();
  peerConnection.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    if (videoElement.srcObject !== stream) videoElement.srcObject = stream;
  });
  peerConnection.addTransceiver("video", { direction: "recvonly" });
  peerConnection.addTransceiver("audio", { direction: "recvonly" });
  try {
    const resourceUrl = await negotiate(peerConnection, url, null);
    return makeSession(peerConnection, resourceUrl, null);
  } catch (error) {
    peerConnection.close();
    throw error;
  }
}
