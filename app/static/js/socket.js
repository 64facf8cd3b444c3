// One WebSocket to /v1/ws that reconnects by itself. Runs outlive sockets, so the page
// only has to re-subscribe after a drop (onOpen); request() pairs a frame with its ack.

import { currentKey } from "./auth.js";

const FIRST_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 4000;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;

export class Disconnected extends Error {
  constructor() {
    super("Not connected to the server.");
    this.name = "Disconnected";
  }
}

export class FrameError extends Error {
  constructor(frame) {
    const field = Array.isArray(frame.errors) && frame.errors.length ? frame.errors[0].msg : "";
    super(field && field !== frame.message ? `${frame.message} (${field})` : frame.message || frame.code);
    this.name = "FrameError";
    this.code = frame.code;
  }
}

export function socketUrl() {
  const url = new URL("v1/ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = currentKey();
  if (key) url.searchParams.set("access_token", key);
  return url.href;
}

export class RunSocket {
  #url;
  #handlers;
  #ws = null;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #pending = new Map();
  #nextId = 0;

  /** handlers: onOpen(), onFrame(frame), onState("connecting" | "open" | "reconnecting") */
  constructor(url, handlers) {
    this.#url = url;
    this.#handlers = handlers;
  }

  start() {
    this.#connect();
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.reconnectNow();
    });
  }

  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  /** Skip the rest of the backoff (the network is back, or the tab is visible again). */
  reconnectNow() {
    if (this.#ws !== null || this.#retryTimer === null) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#connect();
  }

  /** Send a frame and wait for its ack (resolves with it) or error frame (rejects with FrameError). */
  request(frame) {
    if (!this.isOpen) return Promise.reject(new Disconnected());
    const id = `f${++this.#nextId}`;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Close the socket as a network drop would (tests use it); the socket comes back by itself. */
  drop() {
    const ws = this.#ws;
    if (ws === null) return;
    ws.close(4000, "dropped by the client");
    this.#closed(ws);
  }

  #connect() {
    this.#handlers.onState(this.#attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      // a function: the URL carries the current API key, which may have changed since the last try
      ws = new WebSocket(typeof this.#url === "function" ? this.#url() : this.#url);
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    ws.addEventListener("open", () => {
      if (this.#ws !== ws) return;
      this.#attempt = 0;
      this.#handlers.onState("open");
      this.#pingTimer = setInterval(() => this.#ping(), PING_EVERY_MS);
      this.#handlers.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (this.#ws === ws) this.#receive(event.data);
    });
    ws.addEventListener("close", () => this.#closed(ws));
  }

  #closed(ws) {
    if (this.#ws !== ws) return;
    this.#ws = null;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const { reject } of pending) reject(new Disconnected());
    this.#handlers.onState("reconnecting");
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    const ceiling = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2; // jitter: a restarted server is not stampeded
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delay);
  }

  // A half-open connection never reports a close; a missing pong finds it.
  #ping() {
    const ws = this.#ws;
    if (!this.isOpen) return;
    this.request({ type: "ping" }).then(
      () => clearTimeout(this.#pongTimer),
      () => {},
    );
    clearTimeout(this.#pongTimer);
    this.#pongTimer = setTimeout(() => {
      ws.close();
      this.#closed(ws);
    }, PONG_TIMEOUT_MS);
  }

  #receive(raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    const isReply = frame.type === "ack" || frame.type === "error" || frame.type === "pong";
    if (isReply && frame.id != null && this.#pending.has(frame.id)) {
      const { resolve, reject } = this.#pending.get(frame.id);
      this.#pending.delete(frame.id);
      if (frame.type === "error") reject(new FrameError(frame));
      else resolve(frame);
      return;
    }
    this.#handlers.onFrame(frame);
  }
}
