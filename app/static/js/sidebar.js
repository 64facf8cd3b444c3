// The history sidebar: past conversations, newest first. On a narrow screen it slides in
// over the log behind a toggle, and Escape or a click outside puts it away.

import { listConversations } from "./api.js";
import { h } from "./view.js";

const NARROW = window.matchMedia("(max-width: 760px)");

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

export class Sidebar {
  #root;
  #list;
  #empty;
  #toggle;
  #backdrop;
  #panel;
  #onSelect;
  #current = null;
  #refreshes = 0;

  constructor({ root, panel, list, empty, toggle, backdrop, onSelect }) {
    this.#root = root;
    this.#panel = panel;
    this.#list = list;
    this.#empty = empty;
    this.#toggle = toggle;
    this.#backdrop = backdrop;
    this.#onSelect = onSelect;
    toggle.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    backdrop.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen) {
        this.close();
        this.#toggle.focus();
      }
    });
    NARROW.addEventListener("change", () => this.close());
  }

  get isOpen() {
    return this.#root.dataset.sidebar === "open";
  }

  open() {
    this.#root.dataset.sidebar = "open";
    this.#toggle.setAttribute("aria-expanded", "true");
    this.#toggle.setAttribute("aria-label", "Hide history");
    this.#backdrop.hidden = false;
    (this.#list.querySelector("[aria-current='true']") ?? this.#list.querySelector("button") ?? this.#panel).focus();
  }

  close() {
    this.#root.dataset.sidebar = "closed";
    this.#toggle.setAttribute("aria-expanded", "false");
    this.#toggle.setAttribute("aria-label", "Show history");
    this.#backdrop.hidden = true;
  }

  async refresh() {
    const ticket = ++this.#refreshes;
    const page = await listConversations();
    if (ticket === this.#refreshes) this.render(page.data); // an older answer that came late is dropped
  }

  render(conversations) {
    this.#empty.hidden = conversations.length > 0;
    this.#list.replaceChildren(
      ...conversations.map((c) => {
        const count = `${c.message_count} message${c.message_count === 1 ? "" : "s"}`;
        const button = h(
          "button",
          {
            type: "button",
            class: "history__item",
            "data-testid": "history-item",
            "data-conversation-id": c.id,
            "aria-current": c.id === this.#current ? "true" : "false",
          },
          h("span", { class: "history__title", text: c.title || "Untitled" }),
          h("span", { class: "history__meta", text: `${count} · ${when(c.updated_at)}` }),
        );
        button.addEventListener("click", () => {
          if (NARROW.matches) this.close();
          this.#onSelect(c.id);
        });
        return h("li", {}, button);
      }),
    );
  }

  setCurrent(id) {
    this.#current = id;
    for (const button of this.#list.querySelectorAll("button[data-conversation-id]")) {
      button.setAttribute("aria-current", button.dataset.conversationId === id ? "true" : "false");
    }
  }
}
