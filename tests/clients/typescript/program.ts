// A program written against the types `openapi-typescript` generates from docs/openapi.json.
// tests/clients/test_generated_clients.py generates schema.d.ts next to it and runs `tsc --noEmit`.
// The @ts-expect-error lines fail the check if the types ever get loose (an unused directive is an error).
import type { components, paths } from "./schema";

type RunEvent = components["schemas"]["RunEvent"];
type RunCreate = paths["/v1/runs"]["post"]["requestBody"]["content"]["application/json"];
type RunRead = paths["/v1/runs"]["post"]["responses"][202]["content"]["application/json"];
type Problem = paths["/v1/runs"]["post"]["responses"][409]["content"]["application/problem+json"];
type EventPage = paths["/v1/runs/{run_id}/events/page"]["get"]["responses"][200]["content"]["application/json"];

const TERMINAL = new Set<RunEvent["type"]>(["run.completed", "run.failed", "run.cancelled"]);

export function describe(event: RunEvent): string {
  switch (event.type) {
    case "message.delta": {
      // @ts-expect-error a delta's text is a string
      const wrong: number = event.data.text;
      return `${event.data.agent}: ${event.data.text}${wrong}`;
    }
    case "message.completed":
      return `${event.data.agent} #${event.data.position} (${event.data.usage.completion_tokens} tokens)`;
    case "tool.call":
      return `${event.data.agent} calls ${event.data.name}(${event.data.arguments})`;
    case "tool.result":
      return `${event.data.name} ${event.data.is_error ? "failed" : "returned"} ${event.data.content}`;
    case "handoff":
      return `${event.data.source} -> ${event.data.target}`;
    case "input.requested":
      return `${event.data.agent} asks (${event.data.request_id})`;
    case "run.completed":
      return `done in ${event.data.duration_ms} ms: ${event.data.result?.text ?? ""}`;
    case "run.failed":
      return `${event.data.status}: ${event.data.error.code}`;
    case "run.cancelled":
      return `cancelled (${event.data.reason})`;
    default:
      return event.type;
  }
}

export async function startRun(base: string, body: RunCreate): Promise<RunRead> {
  const response = await fetch(`${base}/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const problem = (await response.json()) as Problem;
    throw new Error(`${problem.code}: ${problem.detail ?? problem.title}`);
  }
  return (await response.json()) as RunRead;
}

export function follow(base: string, run: RunRead, onEvent: (event: RunEvent) => void): EventSource {
  const source = new EventSource(`${base}/v1/runs/${run.id}/events`);
  const types: RunEvent["type"][] = ["message.delta", "message.completed", "run.completed", "run.failed", "run.cancelled"];
  for (const type of types) {
    source.addEventListener(type, (message: MessageEvent<string>) => {
      const event = JSON.parse(message.data) as RunEvent;
      onEvent(event);
      if (TERMINAL.has(event.type)) source.close();
    });
  }
  return source;
}

export function lastSeq(page: EventPage): number {
  return page.data.length ? page.data[page.data.length - 1].seq : page.last_seq;
}

// a request body is checked too
// @ts-expect-error `task` is required
const missingTask: RunCreate = { team_id: "demo" };
// @ts-expect-error `if_busy` is one of reject | enqueue | interrupt
const badPolicy: RunCreate = { team_id: "demo", task: "x", if_busy: "sometimes" };
// @ts-expect-error there is no such event type
const unknown: RunEvent["type"] = "message.deleted";
export const checked = [missingTask, badPolicy, unknown];
