// A room connection that reconnects with backoff and resumes from the last sequence number
// (docs/protocol.md). `onMessage` gets every server message; `onStatus` a short status text
// and whether the socket is up; `onOpen` runs on every (re)connection (say, to sign in).
export function connectRoom(roomId, { onMessage, onStatus, onOpen = () => {} }) {
  const tokenKey = `livecommerce.viewer.${roomId}`;
  let lastSeq = null;
  let socket = null;
  let retryMs = 250;
  let stopped = false;

  function url() {
    const base = new URL(`/ws/rooms/${encodeURIComponent(roomId)}`, location.href);
    base.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const token = localStorage.getItem(tokenKey);
    if (token) base.searchParams.set("viewer", token);
    if (lastSeq !== null) base.searchParams.set("since", String(lastSeq));
    return base;
  }

  function open() {
    socket = new WebSocket(url());
    socket.onopen = () => { retryMs = 250; onStatus("connected", true); onOpen(); };
    socket.onmessage = (frame) => {
      const message = JSON.parse(frame.data);
      if (message.type === "welcome/v1") localStorage.setItem(tokenKey, message.viewer_token);
      // A snapshot is where the room is now: its number replaces ours, even a lower one
      // (a restart made the room again, so numbers we saw were another run's).
      if (message.type === "snapshot/v1") lastSeq = message.seq;
      else if (typeof message.seq === "number" && (lastSeq === null || message.seq > lastSeq)) lastSeq = message.seq;
      onMessage(message);
    };
    socket.onclose = (event) => {
      const final = [4003, 4004, 4010, 1003, 1009].includes(event.code);
      if (stopped || final) { onStatus(`closed: ${event.reason || event.code}`, false, event.code); return; }
      onStatus(`connection lost, retrying in ${Math.round(retryMs / 1000 * 10) / 10} s…`, false);
      setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, 8000);
    };
  }

  open();
  return {
    send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(message)); return true; }
      return false;
    },
    get connected() { return socket?.readyState === WebSocket.OPEN; },
    get lastSeq() { return lastSeq; },
    // Drops the current connection as a network failure would; it reconnects and resumes.
    drop() { socket?.close(); },
    close() { stopped = true; socket?.close(); },
  };
}
