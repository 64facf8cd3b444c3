// The official AG-UI client (HttpAgent) meets the server's limits: the run it asks for is refused
// before any stream (an HTTP status with a problem+json body) and `runAgent` rejects with that status.
// Runs the team twice on one thread; the server allows one start a minute. Prints one JSON line.
import { HttpAgent } from "@ag-ui/client";

const [url, threadId] = process.argv.slice(2);
const agent = new HttpAgent({
  url,
  threadId,
  initialMessages: [{ id: "task-1", role: "user", content: "Write a haiku about rivers." }],
});

const failed = [];
const first = await agent.runAgent({ runId: "node-limit-1" });
agent.messages.push({ id: "task-2", role: "user", content: "And one about the sea." });
let refused = null;
try {
  await agent.runAgent({ runId: "node-limit-2" }, { onRunFailed: ({ error }) => { failed.push(error.status); } });
} catch (error) {
  const payload = typeof error.payload === "string" ? JSON.parse(error.payload) : error.payload;
  refused = { status: error.status, code: payload.code, detail: payload.detail, message: error.message };
}
console.log(JSON.stringify({ first: first.newMessages.length, refused, failed }));
