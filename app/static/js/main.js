// The chat page: wires the composer, team picker, history and status to the run tracker.

import * as api from "./api.js";
import { RunTracker, tokensOf } from "./runs.js";
import { Sidebar } from "./sidebar.js";
import { setApiKey } from "./auth.js";
import { RunSocket, socketUrl } from "./socket.js";
import { ConversationView, h, STATUS_LABELS, TERMINAL_STATUSES } from "./view.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  log: $("log"),
  title: $("conversation-title"),
  runStatus: $("run-status"),
  connection: $("connection"),
  composer: $("composer"),
  team: $("team"),
  teamDesc: $("team-desc"),
  task: $("task"),
  send: $("send"),
  cancel: $("cancel"),
  statusLine: $("status-line"),
  newConversation: $("new-conversation"),
};
const TEAM_KEY = "swarmdirector.team";
const TEAM_KINDS = { round_robin: "Round robin", selector: "Selector", swarm: "Swarm", single: "Single" };
const CONNECTION = { connecting: "Connecting…", open: "Connected", reconnecting: "Reconnecting…" };

let teams = [];
let conversationId = null;
let viewToken = 0; // bumped whenever the log switches conversation; stale loads check it

const view = new ConversationView(ui.log);
const socket = new RunSocket(socketUrl, {
  onOpen: () => {
    clearStatus("info");
    tracker.onSocketOpen();
  },
  onFrame,
  onState: (state) => {
    ui.connection.dataset.state = state;
    ui.connection.textContent = CONNECTION[state];
  },
});
const tracker = new RunTracker(socket, view, {
  status: setRunStatus,
  adopted: (run, pending) => {
    if (conversationId !== run.conversation_id) {
      conversationId = run.conversation_id;
      writeHash(conversationId);
      sidebar.setCurrent(conversationId);
      setTitle(pending.task.slice(0, 80));
      refreshHistory();
    }
    clearStatus("info");
    updateControls();
  },
  finished: () => {
    updateControls();
    refreshHistory();
  },
  startFailed: (pending, exc) => {
    if (!ui.task.value) ui.task.value = pending.task;
    autosize();
    setRunStatus(pending.previous);
    updateControls();
    showStatus(`The run did not start: ${exc.message}`);
    if (exc.code?.endsWith("not_found")) loadTeams(); // the team went away: offer the ones there are
  },
  notice: showStatus,
});
const sidebar = new Sidebar({
  root: ui.app,
  panel: $("sidebar"),
  list: $("history"),
  empty: $("history-empty"),
  toggle: $("sidebar-toggle"),
  backdrop: $("backdrop"),
  onSelect: (id) => openConversation(id),
});

function onFrame(frame) {
  if (typeof frame.seq === "number" && typeof frame.run_id === "string") {
    tracker.onEvent(frame);
  } else if (frame.type === "error") {
    showStatus(frame.message || frame.code || "The server refused a frame.");
  } else if (frame.type === "stream.closing") {
    showStatus("The server is restarting; the run resumes when it is back.", "info");
  }
}

// ---- status and controls ------------------------------------------------------------------

function showStatus(text, kind = "error") {
  ui.statusLine.textContent = text;
  ui.statusLine.dataset.kind = kind;
}

function clearStatus(kind = null) {
  if (kind === null || ui.statusLine.dataset.kind === kind) showStatus("", "none");
}

function setRunStatus(status) {
  ui.runStatus.dataset.status = status;
  ui.runStatus.textContent = STATUS_LABELS[status] ?? status;
}

function updateControls() {
  ui.send.disabled = tracker.busy || !ui.team.value;
  ui.cancel.hidden = tracker.liveRunId === null;
  if (ui.cancel.hidden) {
    ui.cancel.disabled = false;
    ui.cancel.textContent = "Cancel run";
  }
}

function setTitle(text) {
  ui.title.textContent = text;
  document.title = text === "New conversation" ? "SwarmDirector" : `${text} · SwarmDirector`;
}

function autosize() {
  ui.task.style.height = "auto";
  ui.task.style.height = `${Math.min(ui.task.scrollHeight, 200)}px`;
}

// ---- teams -----------------------------------------------------------------------------------

function memberName(member) {
  if (typeof member === "string") return member;
  return member.kind === "user_proxy" ? `${member.name} (you)` : member.name;
}

function describeTeam() {
  const team = teams.find((t) => t.id === ui.team.value);
  ui.teamDesc.textContent = team ? `${TEAM_KINDS[team.kind] ?? team.kind} · ${team.members.map(memberName).join(", ")}` : "";
  ui.teamDesc.title = team?.description ?? "";
}

function savedTeam() {
  try {
    return localStorage.getItem(TEAM_KEY);
  } catch {
    return null; // storage off: nothing remembered
  }
}

async function loadTeams() {
  try {
    teams = (await api.listTeams()).data;
  } catch (exc) {
    teams = [];
    showStatus(`Could not load the teams: ${exc.message}`);
  }
  ui.team.replaceChildren(...teams.map((t) => h("option", { value: t.id, text: t.name })));
  ui.team.disabled = teams.length === 0;
  if (!teams.length) ui.team.append(h("option", { value: "", text: "No teams yet" }));
  const saved = savedTeam();
  const pick = teams.find((t) => t.id === saved) ?? teams.find((t) => t.name === "demo") ?? teams[0];
  if (pick) ui.team.value = pick.id;
  describeTeam();
  updateControls();
}

// ---- runs ------------------------------------------------------------------------------------

function startRun() {
  const task = ui.task.value.trim();
  if (!task) {
    ui.task.focus();
    return;
  }
  if (tracker.busy) {
    showStatus("A run is going: wait for it to finish, or cancel it.");
    return;
  }
  if (!ui.team.value) {
    showStatus("Pick a team first.");
    return;
  }
  clearStatus();
  tracker.start({ task, teamId: ui.team.value, conversationId, previous: ui.runStatus.dataset.status });
  ui.task.value = "";
  autosize();
  updateControls();
}

async function cancelRun() {
  const runId = tracker.liveRunId;
  ui.cancel.disabled = true;
  ui.cancel.textContent = "Cancelling…";
  try {
    await tracker.cancel();
  } catch (exc) {
    showStatus(`Could not cancel the run: ${exc.message}`);
    if (tracker.liveRunId === runId) {
      ui.cancel.disabled = false;
      ui.cancel.textContent = "Cancel run";
    }
  }
}

// ---- conversations ---------------------------------------------------------------------------

function readHash() {
  return new URLSearchParams(location.hash.slice(1)).get("conversation");
}

function writeHash(id) {
  const url = id ? `#conversation=${encodeURIComponent(id)}` : `${location.pathname}${location.search}`;
  history.replaceState(null, "", url);
}

function beginView(id) {
  viewToken += 1;
  tracker.leave();
  conversationId = id;
  view.reset();
  sidebar.setCurrent(id);
  writeHash(id);
  setRunStatus("idle");
  clearStatus();
  updateControls();
  return viewToken;
}

function newConversation() {
  beginView(null);
  setTitle("New conversation");
  ui.task.focus();
}

function summaryOf(run) {
  const started = Date.parse(run.started_at ?? run.created_at);
  const finished = Date.parse(run.finished_at);
  return {
    runId: run.id,
    status: run.status,
    error: run.error,
    stopReason: run.stop_reason,
    reason: run.status === "cancelled" ? run.stop_reason : null,
    durationMs: Number.isFinite(finished - started) ? finished - started : null,
    tokens: tokensOf(run.usage),
  };
}

async function openConversation(id) {
  if (id === conversationId) return;
  const token = beginView(id);
  setTitle("Loading…");
  try {
    const [conversation, messages, runs] = await Promise.all([
      api.getConversation(id),
      api.conversationMessages(id),
      api.conversationRuns(id),
    ]);
    if (token !== viewToken) return;
    setTitle(conversation.title || "Untitled");
    if (teams.some((t) => t.id === conversation.team_id)) {
      ui.team.value = conversation.team_id;
      describeTeam();
    }
    const lastOfRun = new Map(messages.map((m, i) => [m.run_id, i]));
    const runsById = new Map(runs.map((r) => [r.id, r]));
    messages.forEach((m, i) => {
      view.completed({ message_id: m.id, agent: m.agent, type: m.type, text: m.text }, m.run_id);
      const run = runsById.get(m.run_id);
      if (run && lastOfRun.get(m.run_id) === i && TERMINAL_STATUSES.has(run.status)) view.runSummary(summaryOf(run));
    });
    for (const run of runs) {
      setRunStatus(run.status);
      // still live: follow it from its start; what is already on screen is skipped by message id
      if (!TERMINAL_STATUSES.has(run.status)) tracker.attach(run);
    }
    updateControls();
  } catch (exc) {
    if (token !== viewToken) return;
    if (exc.status === 404) {
      newConversation();
      showStatus("That conversation no longer exists.");
    } else {
      setTitle("Conversation");
      showStatus(`Could not load the conversation: ${exc.message}`);
    }
  }
}

function refreshHistory() {
  return sidebar.refresh().catch((exc) => showStatus(`Could not load the history: ${exc.message}`));
}

// ---- wiring ----------------------------------------------------------------------------------

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  startRun();
});
ui.task.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    startRun();
  }
});
ui.task.addEventListener("input", autosize);
ui.team.addEventListener("change", () => {
  describeTeam();
  updateControls();
  try {
    localStorage.setItem(TEAM_KEY, ui.team.value);
  } catch {
    // storage off: the choice is not remembered
  }
});
ui.cancel.addEventListener("click", cancelRun);
ui.newConversation.addEventListener("click", newConversation);

// for tests and debugging: drop the socket as a flaky network would, and look inside
window.__swarm = {
  dropSocket: () => socket.drop(),
  get conversationId() {
    return conversationId;
  },
  get mismatches() {
    return [...view.mismatches];
  },
  get runs() {
    return [...tracker.runs.values()].map(({ id, lastSeq, status, terminal }) => ({ id, lastSeq, status, terminal }));
  },
};

// a server that requires API keys: ask for one in place, then reconnect and reload with it
const keyDialog = $("key-dialog");
window.addEventListener("swarm:unauthorized", () => {
  if (!keyDialog.open) keyDialog.showModal();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("api-key").value.trim();
  if (!value) return;
  setApiKey(value);
  $("api-key").value = "";
  keyDialog.close();
  clearStatus("info");
  socket.drop(); // reconnects at once, now with the key
  loadTeams();
  refreshHistory();
});

socket.start();
updateControls();
await Promise.all([loadTeams(), refreshHistory()]);
const initial = readHash();
if (initial) openConversation(initial);
else ui.task.focus();
