// A tool call that needs approval, through the official AG-UI client (HttpAgent): the first run ends
// with a `tool_approval` interrupt bound to the call, the second resumes it with an edit.
// Prints one JSON line for the Python test to judge.
import { HttpAgent } from "@ag-ui/client";

const [url, threadId] = process.argv.slice(2);
const agent = new HttpAgent({
  url,
  threadId,
  initialMessages: [{ id: "task-1", role: "user", content: "What is six times seven?" }],
});

async function run(parameters) {
  const events = [];
  await agent.runAgent(parameters, { onEvent: ({ event }) => { events.push(event); } });
  return events;
}

const first = await run({ runId: "approve-run-1" });
const interrupts = first.find((e) => e.type === "RUN_FINISHED")?.outcome?.interrupts ?? [];
const resume = interrupts.map((i) => ({
  interruptId: i.id,
  status: "resolved",
  payload: { decision: "edit", arguments: { expression: "6*8" }, reason: "a dozen more" },
}));
const second = await run({ runId: "approve-run-2", resume });
console.log(JSON.stringify({
  interrupts,
  calls: first.filter((e) => e.type === "TOOL_CALL_START").map((e) => e.toolCallId),
  firstEnd: first.at(-1).outcome?.type ?? null,
  results: second.filter((e) => e.type === "TOOL_CALL_RESULT").map((e) => [e.toolCallId, e.content]),
  secondEnd: second.at(-1).outcome?.type ?? null,
}));
