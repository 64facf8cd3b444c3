// The API key, for a server that requires one. Kept for this tab only (sessionStorage): closing
// the tab forgets it. Fetches send it as a Bearer header; the socket, which cannot set headers
// from a browser, as `access_token` (the server strips it from its access log).

const KEY = "swarmdirector.apiKey";
let memory = ""; // where the key lives when the browser keeps no session storage

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function setApiKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage off: the key lasts until the page is reloaded
  }
  memory = value;
}

export function currentKey() {
  return apiKey() || memory;
}

export function authHeaders() {
  const key = currentKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** Tell the page that the server wants a (valid) key. */
export function announceUnauthorized() {
  window.dispatchEvent(new CustomEvent("swarm:unauthorized"));
}
