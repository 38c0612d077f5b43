// The plain live feed: room header, counters, pinned product and comments. All user text
// goes in with textContent, never innerHTML.
import { connectRoom } from "./room-socket.js";

const roomId = new URLSearchParams(location.search).get("room") || "demo";
const $ = (id) => document.getElementById(id);
const seen = new Set();

function addComment(comment) {
  if (seen.has(comment.id)) return;
  seen.add(comment.id);
  const item = document.createElement("li");
  item.dataset.id = comment.id;
  const name = document.createElement("b");
  name.textContent = comment.name;
  const text = document.createElement("span");
  text.textContent = comment.text;
  item.append(name, text);
  $("comments").append(item);
  $("comments").scrollTop = $("comments").scrollHeight;
}

function showPinned(product) {
  const box = $("pinned");
  box.hidden = !product;
  if (!product) return;
  const price = new Intl.NumberFormat(undefined, { style: "currency", currency: product.currency })
    .format(product.price_cents / 100);
  box.textContent = `📌 ${product.title} · ${price}`;
}

function showState(message) {
  for (const key of ["likes", "shares", "viewers"]) {
    if (typeof message[key] === "number") $(key).textContent = String(message[key]);
  }
}

const room = connectRoom(roomId, {
  onStatus: (text) => { $("status").textContent = text; },
  onMessage: (message) => {
    switch (message.type) {
      case "snapshot/v1":
        $("title").textContent = message.title;
        $("host").textContent = `with ${message.host_name}`;
        $("live").hidden = !message.live;
        $("comments").replaceChildren();
        seen.clear();
        message.comments.forEach(addComment);
        showPinned(message.pinned);
        showState(message);
        break;
      case "comment/v1": addComment(message); break;
      case "comment.removed/v1": document.querySelector(`[data-id="${CSS.escape(message.id)}"]`)?.remove(); break;
      case "pin/v1": showPinned(message.product); break;
      case "room.live/v1": $("live").hidden = !message.live; break;
      case "room.ended/v1": $("live").hidden = true; $("status").textContent = "the room has ended"; break;
      case "state/v1": showState(message); break;
      case "error/v1": $("status").textContent = message.message; break;
    }
  },
});

$("comment-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (room.send({ type: "comment/v1", name: $("name").value, text: $("text").value })) $("text").value = "";
});
$("like").addEventListener("click", () => room.send({ type: "like/v1", count: 1 }));
$("share").addEventListener("click", async () => {
  room.send({ type: "share/v1" });
  try { await navigator.clipboard.writeText(location.href); } catch { /* clipboard may be refused */ }
});
