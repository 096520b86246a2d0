// The game relay's live view: join as a spectator, draw every relayed position.
//
// The relay (protocols/game/relay.py) speaks msgpack maps whose "type" key
// names the message; over WebSocket one binary message is one of them, with
// no length prefix. A spectator is a player that sends no positions: it joins
// (a cookie handshake), then only receives.
"use strict";

/* global MessagePack */  // vendor/msgpack.min.js, @msgpack/msgpack's browser bundle

// The first join's cookie: 24 zero bytes (protocols.game.messages.NO_COOKIE).
const NO_COOKIE = new Uint8Array(24);
// A spectator sends nothing else, and a served connection whose peer sends
// nothing for the idle timeout (300 s by default) is closed: joining again
// is the protocol's no-op (the relay answers with the same welcome).
const REJOIN_SECONDS = 30;
// Positions kept per player for its trail.
const TRAIL = 24;
// A player with no update for this long is greyed out, then forgotten.
const STALE_MS = 3000;
const FORGET_MS = 30000;
// Sequence numbers: 32-bit serial arithmetic and a 64-number window, as
// protocols/game/tracker.py's SequenceTracker.
const MODULUS = 2 ** 32;
const HALF = 2 ** 31;
const WINDOW = 64n;
const WINDOW_MASK = (1n << WINDOW) - 1n;

const canvas = document.getElementById("field");
const context = canvas.getContext("2d");
const rows = document.querySelector("#players tbody");
const status = document.getElementById("status");
const totals = document.getElementById("totals");

// player number -> {x, y, trail, received, lost, late, dup, newest, seen, missing, ...}
const players = new Map();
let spectator = null;
let cookie = NO_COOKIE;
let relayed = 0;
let extent = 10;  // world units from the centre to the canvas edge, grows to fit

function socketUrl() {
  const given = new URLSearchParams(location.search).get("ws");
  if (given) return given;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${location.pathname.replace(/index\.html$/, "")}`;
}

function colour(player) {
  return `hsl(${(player * 137.508) % 360}, 85%, 60%)`;
}

// Accept an update if it is newer than the newest from this player; count
// the skipped numbers as lost until they turn up late.
function track(state, count) {
  state.received += 1;
  count %= MODULUS;
  if (state.newest === null) {
    state.newest = count;
    state.seen = 1n;
    state.missing = 0n;
    return true;
  }
  const delta = (count - state.newest + MODULUS) % MODULUS;
  if (delta === 0) {
    state.dup += 1;
    return false;
  }
  if (delta < HALF) {
    const shift = BigInt(Math.min(delta, 64));
    const skipped = BigInt(Math.min(delta - 1, 64));
    state.lost += delta - 1;
    state.seen = ((state.seen << shift) | 1n) & WINDOW_MASK;
    state.missing = ((state.missing << shift) | (((1n << skipped) - 1n) << 1n)) & WINDOW_MASK;
    state.newest = count;
    return true;
  }
  const age = BigInt(MODULUS - delta);
  const bit = age < WINDOW ? 1n << age : 0n;
  if (state.seen & bit) {
    state.dup += 1;
    return false;
  }
  if (state.missing & bit) {
    state.lost -= 1;  // late, not lost after all
    state.missing &= ~bit;
  }
  state.seen |= bit;
  state.late += 1;
  return false;
}

function player(number) {
  let state = players.get(number);
  if (state === undefined) {
    state = {
      x: 0, y: 0, z: 0, trail: [], received: 0, lost: 0, late: 0, dup: 0,
      newest: null, seen: 0n, missing: 0n, lastAt: 0, windowStart: performance.now(), windowCount: 0,
      rate: 0,
    };
    players.set(number, state);
  }
  return state;
}

function onRelayed(update) {
  relayed += 1;
  const state = player(update.player);
  const now = performance.now();
  state.lastAt = now;
  state.windowCount += 1;
  if (now - state.windowStart >= 1000) {
    state.rate = (state.windowCount * 1000) / (now - state.windowStart || 1000);
    state.windowStart = now;
    state.windowCount = 0;
  }
  const { x, y, z, count } = update.position;
  if (!track(state, count)) return;  // stale: a newer position is already drawn
  state.x = x;
  state.y = y;
  state.z = z;
  state.trail.push([x, y]);
  if (state.trail.length > TRAIL) state.trail.shift();
  extent = Math.max(extent, Math.abs(x) * 1.15, Math.abs(y) * 1.15);
}

function draw() {
  const size = canvas.width;
  const scale = size / 2 / extent;
  const now = performance.now();
  context.fillStyle = "#111";
  context.fillRect(0, 0, size, size);
  context.strokeStyle = "#333";
  context.lineWidth = 1;
  context.beginPath();
  context.moveTo(size / 2, 0);
  context.lineTo(size / 2, size);
  context.moveTo(0, size / 2);
  context.lineTo(size, size / 2);
  context.stroke();
  for (const [number, state] of players) {
    if (state.newest === null) continue;
    const fade = now - state.lastAt > STALE_MS ? 0.35 : 1;
    const toCanvas = ([x, y]) => [size / 2 + x * scale, size / 2 - y * scale];
    context.globalAlpha = 0.4 * fade;
    context.strokeStyle = colour(number);
    context.lineWidth = 2;
    context.beginPath();
    state.trail.forEach((point, index) => {
      const [cx, cy] = toCanvas(point);
      if (index === 0) context.moveTo(cx, cy);
      else context.lineTo(cx, cy);
    });
    context.stroke();
    context.globalAlpha = fade;
    const [cx, cy] = toCanvas([state.x, state.y]);
    context.fillStyle = colour(number);
    context.beginPath();
    context.arc(cx, cy, 8, 0, 2 * Math.PI);
    context.fill();
    context.fillStyle = "#eee";
    context.font = "12px system-ui, sans-serif";
    // Player numbers can be ten digits long: keep the label inside the canvas.
    const label = String(number);
    const width = context.measureText(label).width;
    const lx = cx + 10 + width <= size ? cx + 10 : cx - 10 - width;
    context.fillText(label, lx, Math.max(12, cy - 10));
  }
  context.globalAlpha = 1;
  requestAnimationFrame(draw);
}

function cell(text, name) {
  const td = document.createElement("td");
  td.textContent = text;
  if (name) td.className = name;
  return td;
}

function refreshTable() {
  const now = performance.now();
  const sorted = [...players.keys()].sort((a, b) => a - b);
  const fresh = [];
  for (const number of sorted) {
    const state = players.get(number);
    if (now - state.lastAt > FORGET_MS) {
      players.delete(number);
      continue;
    }
    const row = document.createElement("tr");
    row.dataset.player = String(number);
    if (now - state.lastAt > STALE_MS) row.className = "stale";
    const name = cell("", "player");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(number);
    name.append(swatch, String(number));
    row.append(
      name,
      cell(state.x.toFixed(2), "x"),
      cell(state.y.toFixed(2), "y"),
      cell(String(state.received), "received"),
      cell(String(state.lost), "lost"),
      cell(String(state.late), "late"),
      cell(String(state.dup), "dup"),
      cell(state.rate.toFixed(0), "rate"),
    );
    fresh.push(row);
  }
  rows.replaceChildren(...fresh);
  const who = spectator === null ? "" : `spectator #${spectator}; `;
  totals.textContent = `${who}${players.size} players, ${relayed} updates`;
}

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

function connect() {
  const url = socketUrl();
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const join = () => socket.send(MessagePack.encode({ type: "join", cookie }));
  let rejoin = null;
  setStatus("connecting", `connecting to ${url}\u2026`);
  socket.addEventListener("open", () => {
    setStatus("open", `connected to ${url}`);
    join();
    rejoin = setInterval(join, REJOIN_SECONDS * 1000);
  });
  socket.addEventListener("message", (event) => {
    let value;
    try {
      value = MessagePack.decode(new Uint8Array(event.data));
    } catch (error) {
      console.warn("not a msgpack message", error);
      return;
    }
    switch (value?.type) {
      case "relayed":
        onRelayed(value);
        break;
      case "challenge":
        // Echo the relay's cookie: the second step of joining.
        cookie = value.cookie;
        join();
        break;
      case "welcome":
        spectator = value.player;
        break;
      default:
        break;  // a message this page does not know: not its business
    }
  });
  socket.addEventListener("close", (event) => {
    clearInterval(rejoin);
    const why = event.reason ? `, ${event.reason}` : "";
    setStatus("closed", `disconnected (code ${event.code}${why}); reload to reconnect`);
  });
}

connect();
setInterval(refreshTable, 250);
requestAnimationFrame(draw);
