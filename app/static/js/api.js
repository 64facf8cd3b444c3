// The HTTP half of the page: teams, conversation history, and fallbacks for when the socket is down.
// Paths are relative to the page, so the app also works behind a path prefix.

import { announceUnauthorized, authHeaders } from "./auth.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = problem?.code || "http_error";
  }
}

async function request(path, { method = "GET", body } = {}) {
  const init = { method, headers: { accept: "application/json", ...authHeaders() } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(new URL(path, document.baseURI), init);
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (response.status === 401) announceUnauthorized();
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

const q = encodeURIComponent;

export const listTeams = () => request("v1/teams?limit=200");
export const listConversations = () => request("v1/conversations?limit=100");
export const getConversation = (id) => request(`v1/conversations/${q(id)}`);
export const listRuns = ({ conversationId, limit = 50 } = {}) =>
  request(`v1/runs?limit=${limit}${conversationId ? `&conversation_id=${q(conversationId)}` : ""}`);
export const cancelRun = (runId) => request(`v1/runs/${q(runId)}/cancel`, { method: "POST" });
/** `answer`: the text of a person's answer, or a tool approval's decision (`{decision, content?}`). */
export const sendInput = (runId, requestId, answer) =>
  request(`v1/runs/${q(runId)}/input`, { method: "POST", body: { request_id: requestId, ...asAnswer(answer) } });

/** An answer's fields: `{content}` for text, the decision's own for an approval. */
export const asAnswer = (answer) => (typeof answer === "string" ? { content: answer } : answer);

/** Every message of a conversation, in order (follows `next_after` across pages). */
export async function conversationMessages(id) {
  const messages = [];
  let after = 0;
  for (;;) {
    const page = await request(`v1/conversations/${q(id)}/messages?limit=500&after=${after}`);
    messages.push(...page.data);
    if (page.next_after == null) return messages;
    after = page.next_after;
  }
}

/** Every run of a conversation, oldest first. */
export async function conversationRuns(id) {
  const page = await listRuns({ conversationId: id, limit: 200 });
  return page.data.slice().reverse();
}
