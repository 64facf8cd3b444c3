// Drives a team with the official AG-UI client (HttpAgent): a run that asks a person, then its resume.
// Prints one JSON line: the event types and texts each run saw, for the Python test to judge.
import { HttpAgent } from "@ag-ui/client";

const [url, threadId, key] = process.argv.slice(2);
const headers = key ? { Authorization: `Bearer ${key}` } : {};
const agent = new HttpAgent({
  url,
  headers,
  threadId,
  initialMessages: [{ id: "task-1", role: "user", content: "Write a haiku about rivers." }],
});

async function run(parameters) {
  const events = [];
  await agent.runAgent(parameters, { onEvent: ({ event }) => { events.push(event); } });
  return events;
}

const first = await run({ runId: "node-run-1" });
const finished = first.find((e) => e.type === "RUN_FINISHED");
const interrupts = finished?.outcome?.interrupts ?? [];
const resume = interrupts.map((i) => ({ interruptId: i.id, status: "resolved", payload: "Go ahead." }));
const second = await run({ runId: "node-run-2", resume });
const summary = (events) => events.map((e) => [e.type, e.name ?? null, e.delta ?? null, e.outcome?.type ?? null]);
console.log(JSON.stringify({
  first: summary(first),
  second: summary(second),
  messages: agent.messages.map((m) => [m.role, m.name ?? null, m.content ?? null]),
}));
