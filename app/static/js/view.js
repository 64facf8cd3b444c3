// The conversation log: one bubble per message id, tool calls, hand-offs, input forms and
// run summaries. Every server-supplied string goes in through textContent, never as markup.

export const STATUS_LABELS = {
  idle: "Idle",
  starting: "Starting…",
  queued: "Queued",
  running: "Running",
  awaiting_input: "Awaiting input",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  timed_out: "Timed out",
};
export const TERMINAL_STATUSES = new Set(["succeeded", "failed", "cancelled", "timed_out"]);

// Well-separated hues; an agent's name always picks the same one.
const HUES = [212, 152, 28, 282, 340, 190, 96, 252, 8, 48, 316, 128];

export function agentHue(name) {
  let hash = 2166136261;
  for (const ch of name) {
    hash ^= ch.codePointAt(0);
    hash = Math.imul(hash, 16777619);
  }
  return HUES[(hash >>> 0) % HUES.length];
}

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return String(text ?? "");
  }
}

export function formatDuration(ms) {
  if (ms == null || Number.isNaN(ms)) return null;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

let inputCounter = 0;

export class ConversationView {
  #log;
  #messages = new Map(); // message id -> bubble record
  #tools = new Map(); // call id -> tool card
  #inputs = new Map(); // request id -> input form
  #pinned = true; // follow new output while the reader is at the bottom
  /** Streamed messages whose deltas did not add up to their completed text (a lost or doubled delta). */
  mismatches = [];
  #scrollQueued = false;

  constructor(log) {
    this.#log = log;
    log.addEventListener("scroll", () => {
      this.#pinned = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
    });
    this.reset();
  }

  reset() {
    this.#messages.clear();
    this.#tools.clear();
    this.#inputs.clear();
    this.#pinned = true;
    this.#log.replaceChildren(
      h(
        "div",
        { class: "empty", "data-testid": "empty-state" },
        h("p", { class: "empty__title", text: "Start a conversation" }),
        h("p", { text: "Pick a team, give it a task, and watch its agents work it out live." }),
      ),
    );
  }

  /** The task, shown at once; its message id comes with the task's message.completed. */
  userBubble(text, runId) {
    const record = this.#newBubble(null, "user", runId);
    record.setText(text);
    record.finish();
    return record;
  }

  /** Take back a bubble shown too early (its run did not start). */
  discard(record) {
    record.node.remove();
    if (this.#log.children.length === 0) this.reset();
  }

  bindMessageId(record, messageId) {
    record.node.dataset.messageId = messageId;
    this.#messages.set(messageId, record);
  }

  has(messageId) {
    return this.#messages.has(messageId);
  }

  delta({ message_id: id, agent, text }, runId, seq) {
    const record = this.#messages.get(id) ?? this.#newBubble(id, agent, runId);
    if (record.final) return;
    record.streamed = true;
    record.marks.push(seq, record.text().length); // where each piece began: a crash may take some back
    record.append(String(text ?? ""));
    this.#follow();
  }

  completed({ message_id: id, agent, type, text }, runId) {
    const record = this.#messages.get(id) ?? this.#newBubble(id, agent, runId);
    if (type === "HandoffMessage") record.node.dataset.kind = "handoff";
    if (record.streamed && !record.final && record.text() !== String(text ?? "")) {
      this.mismatches.push(id);
      console.warn("streamed text of message %s differs from its completed text", id);
    }
    record.setText(String(text ?? ""));
    record.finish();
    this.#follow();
  }

  handoff({ message_id: id, source, target }, runId) {
    const record = this.#messages.get(id) ?? this.#newBubble(id, source, runId);
    record.node.dataset.kind = "handoff";
    record.node.dataset.target = target;
    record.note.textContent = `→ ${target}`;
    record.note.hidden = false;
    this.#follow();
  }

  /** Bubbles of a run that never completed (the run was cancelled or failed mid-message). */
  // The run is over: a message still streaming was interrupted. After a crash (`lostAfterSeq`), the
  // pieces streamed after that seq were never stored: their text is taken back off the page.
  settle(runId, lostAfterSeq) {
    for (const record of this.#messages.values()) {
      if (record.runId !== runId || record.final) continue;
      if (Number.isInteger(lostAfterSeq)) {
        const marks = record.marks;
        for (let i = 0; i < marks.length; i += 2) {
          if (marks[i] > lostAfterSeq) {
            record.setText(record.text().slice(0, marks[i + 1]));
            break;
          }
        }
      }
      record.finish("interrupted");
    }
  }

  toolCall({ agent, call_id: callId, name, arguments: args }) {
    const card = this.#toolCard(callId, agent, name);
    card.args.textContent = prettyJson(args);
    this.#follow();
  }

  toolResult({ agent, call_id: callId, name, content, is_error: isError }) {
    const card = this.#toolCard(callId, agent, name);
    card.node.dataset.state = isError ? "error" : "done";
    card.status.textContent = isError ? "error" : "done";
    card.resultLabel.hidden = false;
    card.result.hidden = false;
    card.result.textContent = String(content ?? "");
    this.#follow();
  }

  /** The in-place answer form of an input.requested event; onSubmit(content) returns a promise. */
  inputRequested({ request_id: requestId, agent, prompt, kind, tool }, runId, onSubmit) {
    if (this.#inputs.has(requestId)) return;
    if (kind === "approval") return this.#approvalRequested(requestId, agent, prompt, tool, runId, onSubmit);
    const fieldId = `input-answer-${++inputCounter}`;
    const field = h("input", { id: fieldId, type: "text", autocomplete: "off", required: true });
    const button = h("button", { type: "submit", class: "button button--primary", text: "Send answer" });
    const error = h("p", { class: "input-request__error", role: "alert", "data-testid": "input-error" });
    const form = h(
      "form",
      {
        class: "input-request",
        "data-testid": "input-form",
        "data-request-id": requestId,
        "data-run-id": runId,
        "aria-label": `Input requested by ${agent}`,
      },
      h(
        "p",
        { class: "input-request__head" },
        h("span", { class: "input-request__badge", text: "Input needed" }),
        h("span", { class: "input-request__agent", text: agent }),
      ),
      h("p", { class: "input-request__prompt", "data-testid": "input-prompt", text: prompt || "Your turn." }),
      h("label", { for: fieldId, text: "Your answer" }),
      h("div", { class: "input-request__row" }, field, button),
      error,
    );
    form.style.setProperty("--agent-hue", agentHue(agent));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const content = field.value.trim();
      if (!content) {
        error.textContent = "Type an answer first.";
        field.focus();
        return;
      }
      error.textContent = "";
      button.disabled = true;
      button.textContent = "Sending…";
      try {
        await onSubmit(content);
        button.textContent = "Sent";
      } catch (exc) {
        error.textContent = exc.message;
        button.disabled = false;
        button.textContent = "Send answer";
      }
    });
    this.#inputs.set(requestId, form);
    this.#append(form);
    field.focus({ preventScroll: true });
  }

  /** A tool call waiting for the person's decision: its arguments, an optional note, approve or reject. */
  #approvalRequested(requestId, agent, prompt, tool, runId, onSubmit) {
    const fieldId = `input-answer-${++inputCounter}`;
    const note = h("input", { id: fieldId, type: "text", autocomplete: "off" });
    const approve = h("button", { type: "submit", class: "button button--primary", value: "approve", text: "Approve" });
    const reject = h("button", { type: "submit", class: "button", value: "reject", text: "Reject" });
    const error = h("p", { class: "input-request__error", role: "alert", "data-testid": "input-error" });
    const form = h(
      "form",
      {
        class: "input-request",
        "data-testid": "input-form",
        "data-kind": "approval",
        "data-request-id": requestId,
        "data-run-id": runId,
        "aria-label": `Approval requested by ${agent}`,
      },
      h(
        "p",
        { class: "input-request__head" },
        h("span", { class: "input-request__badge", text: "Approval needed" }),
        h("span", { class: "input-request__agent", text: agent }),
      ),
      h("p", { class: "input-request__prompt", "data-testid": "input-prompt", text: prompt || "" }),
      h("pre", { class: "tool__pre", "data-testid": "approval-args", text: prettyJson(JSON.stringify(tool?.arguments ?? {})) }),
      h("label", { for: fieldId, text: "Note (a rejection's reason, told to the model)" }),
      h("div", { class: "input-request__row" }, note, approve, reject),
      error,
    );
    form.style.setProperty("--agent-hue", agentHue(agent));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const decision = event.submitter?.value === "reject" ? "reject" : "approve";
      const content = note.value.trim();
      error.textContent = "";
      approve.disabled = reject.disabled = true;
      try {
        await onSubmit(content ? { decision, content } : { decision });
      } catch (exc) {
        error.textContent = exc.message;
        approve.disabled = reject.disabled = false;
      }
    });
    this.#inputs.set(requestId, form);
    this.#append(form);
    approve.focus({ preventScroll: true });
  }

  inputReceived({ request_id: requestId }) {
    const form = this.#inputs.get(requestId);
    if (!form) return;
    const hadFocus = form.contains(document.activeElement);
    form.remove();
    this.#inputs.delete(requestId);
    if (hadFocus) document.getElementById("task")?.focus({ preventScroll: true });
  }

  closeInputs(runId) {
    for (const [requestId, form] of this.#inputs) {
      if (form.dataset.runId === runId) this.inputReceived({ request_id: requestId });
    }
  }

  /** The line that ends a run: its status, figures, and the error of a failed run. */
  runSummary({ runId, status, error, reason, stopReason, durationMs, tokens }) {
    let label = STATUS_LABELS[status] ?? status;
    if (status === "cancelled" && reason && reason !== "cancelled") label = `${label} (${reason})`;
    const figures = [label];
    const duration = formatDuration(durationMs);
    if (duration) figures.push(duration);
    if (tokens) figures.push(`${tokens.toLocaleString()} tokens`);
    const node = h(
      "div",
      { class: "run-summary", "data-testid": "run-summary", "data-status": status, "data-run-id": runId },
      h("span", { class: "run-summary__dot", "aria-hidden": "true" }),
      h("span", { class: "run-summary__text", text: figures.join(" · ") }),
    );
    if (stopReason && status === "succeeded") node.title = stopReason;
    if (error) {
      const text = error.code ? `${error.code}: ${error.message || ""}` : String(error.message ?? error);
      node.append(h("p", { class: "run-summary__error", "data-testid": "run-error", text }));
    }
    this.#append(node);
  }

  notice(text) {
    this.#append(h("p", { class: "notice", text }));
  }

  #newBubble(messageId, agent, runId) {
    const name = String(agent ?? "agent");
    const kind = name === "user" ? "user" : "agent";
    const text = h("div", { class: "bubble__text", "data-testid": "bubble-text" });
    const note = h("span", { class: "bubble__note", hidden: true });
    const node = h(
      "article",
      {
        class: "bubble",
        "data-testid": "bubble",
        "data-agent": name,
        "data-kind": kind,
        "data-state": "streaming",
        "data-message-id": messageId,
        "data-run-id": runId,
        "aria-busy": "true",
      },
      h(
        "header",
        { class: "bubble__head" },
        h("span", { class: "bubble__avatar", "aria-hidden": "true", text: kind === "user" ? "You" : name[0] }),
        h("span", { class: "bubble__agent", text: kind === "user" ? "You" : name }),
        note,
      ),
      text,
    );
    if (kind !== "user") node.style.setProperty("--agent-hue", agentHue(name));
    const textNode = document.createTextNode("");
    text.append(textNode);
    const record = {
      node,
      note,
      runId,
      final: false,
      streamed: false,
      marks: [], // per streamed piece: its seq, and the text's length before it
      text: () => textNode.data,
      append: (piece) => textNode.appendData(piece),
      setText: (value) => {
        textNode.data = value;
      },
      finish: (state = "final") => {
        record.final = true;
        node.dataset.state = state;
        node.removeAttribute("aria-busy");
      },
    };
    if (messageId) this.#messages.set(messageId, record);
    this.#append(node);
    return record;
  }

  #toolCard(callId, agent, name) {
    const existing = this.#tools.get(callId);
    if (existing) return existing;
    const status = h("span", { class: "tool__status", text: "running…" });
    const args = h("pre", { class: "tool__pre" });
    const resultLabel = h("p", { class: "tool__label", text: "Result", hidden: true });
    const result = h("pre", { class: "tool__pre", "data-testid": "tool-result", hidden: true });
    const node = h(
      "details",
      { class: "tool", "data-testid": "tool-call", "data-call-id": callId, "data-state": "pending" },
      h(
        "summary",
        {},
        h("span", { class: "tool__agent", text: agent }),
        h("span", { text: " called " }),
        h("code", { class: "tool__name", text: name }),
        status,
      ),
      h("div", { class: "tool__body" }, h("p", { class: "tool__label", text: "Arguments" }), args, resultLabel, result),
    );
    node.style.setProperty("--agent-hue", agentHue(String(agent ?? "")));
    const card = { node, status, args, result, resultLabel };
    this.#tools.set(callId, card);
    this.#append(node);
    return card;
  }

  #append(node) {
    this.#log.querySelector(":scope > .empty")?.remove();
    this.#log.append(node);
    this.#follow();
  }

  #follow() {
    if (!this.#pinned || this.#scrollQueued) return;
    this.#scrollQueued = true;
    requestAnimationFrame(() => {
      this.#scrollQueued = false;
      this.#log.scrollTop = this.#log.scrollHeight;
    });
  }
}
