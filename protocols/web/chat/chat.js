// The chat page: one WebSocket to the chat server, one message per line.
//
// The server is the one `nc` users talk to (protocols/chat.py); over
// WebSocket a message is a line without its newline, so the page sends what
// is typed as it is and shows each message it receives as one line.
"use strict";

// protocols/chat.py's MAX_LINE, in UTF-8 bytes. Over TCP a longer line is
// answered with an error line; over WebSocket the server closes a connection
// whose message is over the limit, so the page refuses it before sending.
const MAX_LINE = 2048;
// Lines kept on screen: the page runs for hours in a busy room.
const MAX_SHOWN = 1000;

const log = document.getElementById("log");
const form = document.getElementById("say");
const input = document.getElementById("line");
const status = document.getElementById("status");
const reconnect = document.getElementById("reconnect");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// The page's own URL names the socket: same host and port, ws:// or wss:// as
// the page came over http:// or https://. `?ws=URL` connects elsewhere.
function socketUrl() {
  const given = new URLSearchParams(location.search).get("ws");
  if (given) return given;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${location.pathname.replace(/index\.html$/, "")}`;
}

function show(text, kind) {
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  const item = document.createElement("li");
  item.textContent = text;  // never innerHTML: lines come from other people
  if (kind) item.className = kind;
  else if (text.startsWith("* ")) item.className = "notice";
  else if (text.startsWith("! ")) item.className = "error";
  log.append(item);
  while (log.childElementCount > MAX_SHOWN) log.firstElementChild.remove();
  if (atBottom) item.scrollIntoView({ block: "end" });
}

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

let socket = null;

function connect() {
  const url = socketUrl();
  setStatus("connecting", `connecting to ${url}\u2026`);
  reconnect.hidden = true;
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    setStatus("open", `connected to ${url}`);
    input.disabled = false;
    input.focus();
  });
  socket.addEventListener("message", (event) => {
    const text = typeof event.data === "string" ? event.data : decoder.decode(event.data);
    show(text);
  });
  socket.addEventListener("close", (event) => {
    const why = event.reason ? `, ${event.reason}` : "";
    setStatus("closed", `disconnected (code ${event.code}${why})`);
    input.disabled = true;
    reconnect.hidden = false;
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = input.value;
  if (!line.trim() || socket === null || socket.readyState !== WebSocket.OPEN) return;
  const size = encoder.encode(line).length;
  if (size > MAX_LINE) {
    show(`! line too long (${size} bytes, over ${MAX_LINE}): not sent`, "error");
    return;
  }
  socket.send(line);
  show(line, "mine");  // the server sends a line to everyone in the room but its sender
  input.value = "";
});

reconnect.addEventListener("click", connect);
connect();
