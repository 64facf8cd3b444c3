// The official AG-UI client (HttpAgent) loses its stream mid-message and reconnects to the same run.
// The first run is aborted at its first text delta (the socket is closed under it); the reconnect is
// `GET .../runs/{runId}`, through HttpAgent's own `fetch` option, so the client's own parser and
// event handling take the snapshot and the rest of the run. Then the run's interrupt is resumed.
// Prints one JSON line: what each stream saw and the client's messages, for the Python test to judge.
import { HttpAgent } from "@ag-ui/client";

const [url, threadId, key] = process.argv.slice(2);
const auth = key ? { Authorization: `Bearer ${key}` } : {};
const runId = "node-reconnect-1";
let reconnecting = false;
const agent = new HttpAgent({
  url,
  headers: auth,
  threadId,
  initialMessages: [{ id: "task-1", role: "user", content: "Write a haiku about rivers." }],
  // a reconnect is a GET of the run, without a body; everything else is the client's own request
  fetch: (target, init) =>
    reconnecting
      ? fetch(`${url}/runs/${runId}`, { method: "GET", headers: { ...auth, Accept: "text/event-stream" }, signal: init.signal })
      : fetch(target, init),
});

async function run(parameters, stopAt) {
  const events = [];
  const onEvent = ({ event }) => {
    events.push(event);
    if (stopAt && event.type === stopAt) agent.abortRun();
  };
  await agent.runAgent(parameters, { onEvent });
  return events;
}

const summary = (events) => events.map((e) => [e.type, e.name ?? null, e.outcome?.type ?? null]);
const messages = () => agent.messages.map((m) => [m.id, m.role, m.content ?? null]);
const cut = await run({ runId }, "TEXT_MESSAGE_CONTENT");
const whenCut = messages();
reconnecting = true;
const reconnected = await run({ runId });
reconnecting = false;
const interrupts = reconnected.find((e) => e.type === "RUN_FINISHED")?.outcome?.interrupts ?? [];
const resume = interrupts.map((i) => ({ interruptId: i.id, status: "resolved", payload: "Go ahead." }));
const resumed = await run({ runId: "node-reconnect-2", resume });
console.log(JSON.stringify({
  cut: summary(cut),
  whenCut,
  reconnected: summary(reconnected),
  resumed: summary(resumed),
  messages: messages(),
}));
