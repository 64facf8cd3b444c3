// Following runs over the socket: start one, apply each event to the view exactly once (by seq),
// and after a dropped socket re-subscribe every live run after the last seq it applied.

import * as api from "./api.js";
import { Disconnected, FrameError } from "./socket.js";

const TERMINAL_EVENTS = { "run.completed": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled" };
const EARLY_LIMIT = 20000;

export function tokensOf(usage) {
  if (!usage) return 0;
  return usage.total_tokens ?? (usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0);
}

export class RunTracker {
  runs = new Map(); // run id -> { id, lastSeq, status, terminal, userBubble }
  liveRunId = null; // the run Cancel acts on
  latestRunId = null; // the run the status pill shows
  pending = null; // a run.start not acked yet: { ref, task, teamId, conversationId, bubble, sent, previous }
  #early = new Map(); // events that came before their run.start ack
  #detached = new Set(); // runs this page stopped following
  #socket;
  #view;
  #hooks;

  /** hooks: status(status), adopted(run resource, pending), finished(), startFailed(pending, error), notice(text, kind) */
  constructor(socket, view, hooks) {
    this.#socket = socket;
    this.#view = view;
    this.#hooks = hooks;
  }

  get busy() {
    return this.liveRunId !== null || this.pending !== null;
  }

  /** Start a run on the task; the user bubble shows at once. */
  start({ task, teamId, conversationId, previous }) {
    this.pending = {
      previous,
      ref: crypto.getRandomValues(new Uint32Array(2)).join("-"),
      task,
      teamId,
      conversationId,
      bubble: this.#view.userBubble(task, null),
      sent: false,
    };
    this.#hooks.status("starting");
    this.#sendStart(this.pending);
  }

  /** Follow a live run found in a conversation's history, from its first event. */
  attach(run) {
    const record = { id: run.id, lastSeq: 0, status: run.status, terminal: false, userBubble: null };
    this.runs.set(run.id, record);
    this.liveRunId = run.id;
    this.latestRunId = run.id;
    this.#subscribe(record);
  }

  /** Leave the conversation on screen: its live runs go on, this page stops following them. */
  leave() {
    for (const run of this.runs.values()) {
      if (!run.terminal) this.#stopFollowing(run.id);
    }
    this.runs.clear();
    this.#early.clear();
    this.pending = null;
    this.liveRunId = null;
    this.latestRunId = null;
  }

  onSocketOpen() {
    for (const run of this.runs.values()) {
      if (!run.terminal) this.#subscribe(run);
    }
    const p = this.pending;
    if (p === null) return;
    if (p.sent) this.#recoverStart(p);
    else this.#sendStart(p);
  }

  onEvent(event) {
    const run = this.runs.get(event.run_id);
    if (run === undefined) {
      if (this.pending !== null && !this.#detached.has(event.run_id)) {
        const early = this.#early.get(event.run_id) ?? [];
        if (early.length < EARLY_LIMIT) early.push(event);
        this.#early.set(event.run_id, early);
      }
      return;
    }
    if (event.seq <= run.lastSeq) return; // already applied (a replay after a reconnect)
    run.lastSeq = event.seq;
    this.#apply(run, event.type, event.data ?? {}, event.seq);
  }

  async cancel() {
    const runId = this.liveRunId;
    if (runId === null) return;
    try {
      if (!this.#socket.isOpen) throw new Disconnected();
      await this.#socket.request({ type: "cancel", run_id: runId });
    } catch (exc) {
      if (!(exc instanceof Disconnected)) throw exc;
      await api.cancelRun(runId);
    }
  }

  /** `answer`: the text of a person's answer, or a tool approval's decision (`{decision, content?}`). */
  async answer(runId, requestId, answer) {
    if (this.#socket.isOpen) {
      try {
        await this.#socket.request({ type: "input", run_id: runId, request_id: requestId, ...api.asAnswer(answer) });
        return;
      } catch (exc) {
        if (!(exc instanceof Disconnected)) throw exc;
      }
    }
    await api.sendInput(runId, requestId, answer);
  }

  // ---- starting --------------------------------------------------------------------------------

  async #sendStart(p) {
    if (!this.#socket.isOpen) {
      this.#hooks.notice("Not connected: the task goes out as soon as the connection is back.", "info");
      return;
    }
    const frame = { type: "run.start", team_id: p.teamId, task: p.task, if_busy: "reject" };
    frame.metadata = { client_ref: p.ref };
    if (p.conversationId) frame.conversation_id = p.conversationId;
    p.sent = true;
    try {
      const ack = await this.#socket.request(frame);
      this.#adopt(p, ack.run);
    } catch (exc) {
      if (!(exc instanceof Disconnected)) this.#failStart(p, exc); // else onSocketOpen finds out
    }
  }

  // The socket dropped between run.start and its ack: the run may or may not exist.
  async #recoverStart(p) {
    try {
      const page = await api.listRuns({ conversationId: p.conversationId, limit: 20 });
      if (this.pending !== p) return;
      const run = page.data.find((r) => r.metadata?.client_ref === p.ref);
      if (run === undefined) {
        p.sent = false;
        this.#sendStart(p);
        return;
      }
      this.#adopt(p, run);
      this.#subscribe(this.runs.get(run.id));
    } catch (exc) {
      this.#failStart(p, exc);
    }
  }

  #failStart(p, exc) {
    if (this.pending !== p) return;
    this.pending = null;
    this.#view.discard(p.bubble);
    this.#hooks.startFailed(p, exc);
  }

  #adopt(p, run) {
    if (this.pending !== p) {
      this.#stopFollowing(run.id); // the page moved to another conversation meanwhile
      return;
    }
    this.pending = null;
    p.bubble.runId = run.id;
    p.bubble.node.dataset.runId = run.id;
    this.runs.set(run.id, { id: run.id, lastSeq: 0, status: run.status, terminal: false, userBubble: p.bubble });
    this.liveRunId = run.id;
    this.latestRunId = run.id;
    this.#hooks.status(run.status);
    this.#hooks.adopted(run, p);
    const early = this.#early.get(run.id) ?? [];
    this.#early.clear();
    for (const event of early) this.onEvent(event);
  }

  // ---- following -------------------------------------------------------------------------------

  #subscribe(run) {
    this.#socket.request({ type: "subscribe", run_id: run.id, after: run.lastSeq }).catch((exc) => {
      if (exc instanceof FrameError) this.#hooks.notice(`Could not follow the run: ${exc.message}`, "error");
    });
  }

  #stopFollowing(runId) {
    this.#detached.add(runId);
    this.#socket.request({ type: "unsubscribe", run_id: runId }).catch(() => {}); // it may have ended already
  }

  #setStatus(run, status) {
    run.status = status;
    if (run.id === this.latestRunId) this.#hooks.status(status);
  }

  #apply(run, type, data, seq) {
    const view = this.#view;
    switch (type) {
      case "run.queued":
        return this.#setStatus(run, "queued");
      case "run.started":
      case "run.resumed":
        return this.#setStatus(run, "running");
      case "run.requeued":
        // its process died; the run resumes elsewhere: what it was streaming is abandoned (and what
        // was streamed past `lost_after_seq` never stored), and its turn comes again as a new message
        this.#setStatus(run, "queued");
        return view.settle(run.id, data.lost_after_seq);
      case "message.delta":
        return view.delta(data, run.id, seq);
      case "message.completed": {
        const bubble = run.userBubble;
        if (data.agent === "user" && bubble && !bubble.node.dataset.messageId && !view.has(data.message_id)) {
          view.bindMessageId(bubble, data.message_id); // the task bubble shown when it was sent
        }
        return view.completed(data, run.id);
      }
      case "tool.call":
        return view.toolCall(data);
      case "tool.result":
        return view.toolResult(data);
      case "handoff":
        return view.handoff(data, run.id);
      case "input.requested":
        this.#setStatus(run, "awaiting_input");
        return view.inputRequested(data, run.id, (answer) => this.answer(run.id, data.request_id, answer));
      case "input.received":
        this.#setStatus(run, "running");
        return view.inputReceived(data);
      case "run.completed":
      case "run.failed":
      case "run.cancelled":
        return this.#finish(run, data.status ?? TERMINAL_EVENTS[type], data);
      default:
        return undefined; // speaker.selected, and types this page does not show
    }
  }

  #finish(run, status, data) {
    run.terminal = true;
    this.#setStatus(run, status);
    this.#view.closeInputs(run.id);
    this.#view.settle(run.id, data.lost_after_seq);
    this.#view.runSummary({
      runId: run.id,
      status,
      error: data.error,
      reason: data.reason,
      stopReason: data.stop_reason,
      durationMs: data.duration_ms,
      tokens: tokensOf(data.usage),
    });
    if (this.liveRunId === run.id) this.liveRunId = null;
    this.#hooks.finished();
  }
}
