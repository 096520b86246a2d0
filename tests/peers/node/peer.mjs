// An independent WebSocket client for wirekit's tests, on Node's `ws` package.
//
//   node peer.mjs URL [--origin ORIGIN] [--protocol NAME] < commands
//
// Reads one JSON command per line from stdin:
//   {"text": "..."}            send a text message
//   {"binary": "<base64>"}     send a binary message
//   {"expect": N}              wait for N messages
//   {"close": CODE}            close with CODE and wait for the close to finish
// and prints one JSON line per event on stdout:
//   {"open": true, "protocol": "..."}
//   {"message": "...", "binary": false} (binary payloads as base64)
//   {"close": CODE, "reason": "..."}
//   {"error": "..."}
import { createInterface } from "node:readline";
import WebSocket from "ws";

const [url, ...rest] = process.argv.slice(2);
const option = (name) => {
  const at = rest.indexOf(name);
  return at >= 0 ? rest[at + 1] : undefined;
};
const protocol = option("--protocol");
const ws = new WebSocket(url, protocol ? [protocol] : [], { origin: option("--origin") });
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");

let waiting = 0;
let wake = null;
const received = () => new Promise((resolve) => { wake = resolve; });

ws.on("message", (data, isBinary) => {
  say({ message: isBinary ? data.toString("base64") : data.toString("utf8"), binary: isBinary });
  waiting -= 1;
  if (waiting <= 0 && wake) { const w = wake; wake = null; w(); }
});
ws.on("close", (code, reason) => { say({ close: code, reason: reason.toString() }); process.exit(0); });
ws.on("error", (error) => { say({ error: String(error.message || error) }); process.exit(1); });
ws.on("unexpected-response", (_request, response) => {
  say({ error: `unexpected response ${response.statusCode}` });
  process.exit(1);
});

ws.on("open", async () => {
  say({ open: true, protocol: ws.protocol });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if ("text" in command) ws.send(command.text);
    else if ("binary" in command) ws.send(Buffer.from(command.binary, "base64"), { binary: true });
    else if ("expect" in command) {
      waiting += command.expect;
      if (waiting > 0) await received();
    } else if ("close" in command) ws.close(command.close);
  }
});
