// Polls in the pages (docs/pages.md, "The poll card"):
//   new PollCard(element, send, { host })  shows the room's newest poll and its live counts;
//     a viewer taps an option to answer (poll.answer/v1, once: the server counts one answer
//     per viewer id), the host sees the counts and a Close button (host.poll_close/v1).
//     card.onMessage(message) takes every room message (snapshot/v1, poll/v1, state/v1,
//     ack/v1, error/v1) and ignores what is not a poll's.
//   mountPollForm(form, send)  the host's form: question, 2..6 options (one per line), how
//     long; sends host.poll/v1.
import { h } from "./ui.js";

const answeredKey = (pollId) => `livecommerce.poll.${pollId}`;
const POLL_ERRORS = new Set(["no_poll", "poll_closed", "bad_option", "already_answered", "poll_open", "poll_exists", "bad_poll"]);

export class PollCard {
  constructor(element, send, { host = false } = {}) {
    this.element = element;
    this.send = send;
    this.host = host;
    this.poll = null;
    this.counts = [];
    this.note = "";
  }

  onMessage(message) {
    switch (message.type) {
      case "snapshot/v1": this.show(message.poll ?? null); break;
      case "poll/v1": this.show(message.poll); break;
      case "state/v1":
        if (message.poll && this.poll && message.poll.poll_id === this.poll.poll_id) {
          this.counts = message.poll.counts;
          this.render();
        }
        break;
      case "ack/v1":
        if (message.ref === "poll.answer/v1") { this.note = "Thanks for answering"; this.render(); }
        break;
      case "error/v1":
        if (POLL_ERRORS.has(message.code)) { this.note = message.message; this.render(); }
        break;
    }
  }

  show(poll) {
    this.poll = poll;
    this.counts = poll ? [...poll.counts] : [];
    this.note = poll?.closed ? "Final result" : "";
    this.render();
  }

  answered() {
    return this.poll ? localStorage.getItem(answeredKey(this.poll.poll_id)) : null;
  }

  answer(option) {
    localStorage.setItem(answeredKey(this.poll.poll_id), String(option));
    this.send({ type: "poll.answer/v1", poll_id: this.poll.poll_id, option });
    this.render();
  }

  render() {
    const poll = this.poll;
    this.element.hidden = !poll;
    if (!poll) return;
    const total = this.counts.reduce((a, b) => a + b, 0);
    const mine = this.answered();
    const open = !poll.closed && Date.now() < poll.closes_at_ms + 2000;
    const canAnswer = !this.host && open && mine === null;
    this.element.dataset.state = poll.closed ? "closed" : "open";
    const close = this.host && !poll.closed
      ? h("button", { class: "ghost poll-close", onclick: () => this.send({ type: "host.poll_close/v1", poll_id: poll.poll_id }) }, "Close poll")
      : "";
    this.element.replaceChildren(
      h("p", { class: "poll-question" }, poll.kind === "question" ? "Question: " : "Poll: ", poll.question),
      h("ol", { class: "poll-options" }, poll.options.map((text, option) => {
        const count = this.counts[option] ?? 0;
        const percent = total ? Math.round((100 * count) / total) : 0;
        return h("li", { dataset: { option: String(option), count: String(count) } },
          canAnswer
            ? h("button", { class: "poll-answer", onclick: () => this.answer(option) }, text)
            : h("span", { class: String(option) === mine ? "poll-mine" : "" }, text),
          h("span", { class: "poll-bar", style: `--share:${percent}%` }),
          h("b", { class: "poll-count" }, `${count} · ${percent}%`));
      })),
      h("p", { class: "poll-note" }, `${total} answer${total === 1 ? "" : "s"}${poll.closed ? " · closed" : ""}${this.note ? ` · ${this.note}` : ""}`),
      close,
    );
  }
}

export function mountPollForm(form, send) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const options = String(data.get("options") || "").split("\n").map((o) => o.trim()).filter(Boolean);
    send({
      type: "host.poll/v1",
      poll_id: `poll-${Date.now().toString(36)}`,
      question: String(data.get("question") || "").trim(),
      options,
      duration_ms: Number(data.get("duration_ms") || 60000),
      kind: String(data.get("kind") || "poll"),
    });
  });
}
