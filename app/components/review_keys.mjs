// The Review page's response view and keys, in the browser. The cursor, labels and colours change at once;
// every label change is an event (numbered, kept in this tab's sessionStorage until the server confirms it)
// sent to the server in order, one batch at a time. A sentence shows "saved" only once the server said so;
// a reload sends the unconfirmed events again (the server skips what it already stored).
//
// Safety: the only HTML inserted is what the server rendered with app.render (escaped text, allow-listed
// MathML); everything else (warnings, names, numbers) goes in through textContent.

const OUTBOX = "fractal-review-outbox";
const COUNTER = "fractal-review-event-id";
const RESEND_MS = 4000; // no answer by then: send the unconfirmed events again (the server skips stored ones)
// Each resend without an answer doubles the wait (up to RESEND_MAX_MS): a resend restarts the page's server run,
// so on a server slower than RESEND_MS per run a fixed interval would interrupt every run before it answers.
const RESEND_MAX_MS = 60000;
const MAX_BATCH = 50;

// How long to wait for an answer after `resends` resends without one.
export function resendWait(resends) {
  return Math.min(RESEND_MS * 2 ** resends, RESEND_MAX_MS);
}

function loadOutbox() {
  try {
    const raw = JSON.parse(sessionStorage.getItem(OUTBOX) || "[]");
    return Array.isArray(raw) ? raw : [];
  } catch (e) {
    return [];
  }
}

function nextEventId() {
  const last = Number(sessionStorage.getItem(COUNTER) || "0");
  const id = Math.max(last + 1, Date.now()); // increasing across reloads of this tab
  sessionStorage.setItem(COUNTER, String(id));
  return id;
}

function isTyping(ev) {
  const t = ev.composedPath ? ev.composedPath()[0] : ev.target;
  if (!t || !t.tagName) return false;
  const tag = t.tagName.toLowerCase();
  return tag === "input" || tag === "textarea" || tag === "select" || t.isContentEditable;
}

class ReviewView {
  constructor(root) {
    this.root = root;
    this.el = (sel) => root.querySelector(sel);
    this.resp = null; // the response as the server last sent it
    this.queue = loadOutbox(); // events not yet confirmed, oldest first (every response)
    this.inflight = null; // {seq, at, last}: the batch sent and not yet answered
    this.resends = 0; // resends since the last answer (the wait before the next one doubles with each)
    this.seq = 0;
    this.answered = 0;
    this.cursor = 0;
    this.showRaw = false;
    this.scoreName = "P(problem | label)"; // what the colour is, in the sentence's tooltip and row
    this.modal = null; // {type: "question"|"conflict", eventId, ...}
    this.message = "";
    this.timer = setInterval(() => this.retry(), 1000);
    this.el(".fs-help-btn").addEventListener("click", () => this.toggleHelp());
  }

  // ------------------------------------------------------------------ server -> browser
  receive(data) {
    this.levels = data.levels;
    this.bins = data.bins;
    this.uncertain = data.uncertain;
    this.criteria = data.criteria || [];
    if (this.switchSeq && (data.batch || 0) >= this.switchSeq) this.switchSeq = 0;
    const crit = this.el(".fs-criterion");
    crit.textContent = data.criterion ? `Criterion: ${data.criterion}` : "";
    crit.hidden = !data.criterion;
    if (data.batch >= (this.inflight ? this.inflight.seq : Infinity)) this.inflight = null;
    if ((data.batch || 0) > this.answered) this.resends = 0;
    this.answered = Math.max(this.answered, data.batch || 0);
    this.drop((e) => e.id <= data.acked);
    this.message = data.refused ? `Not saved: ${data.refused}` : "";
    const resp = data.response;
    const fresh = !this.resp || !resp || this.resp.id !== resp.id;
    this.resp = resp;
    if (fresh) {
      this.cursor = resp ? Math.min(data.focus || 0, Math.max(resp.sentences.length - 1, 0)) : 0;
      this.renderBody();
    }
    this.modal = null;
    const q = data.question;
    const c = data.conflict;
    if (q && this.find(q.event_id)) this.modal = { type: "question", eventId: q.event_id, warning: q.warning };
    else if (c && this.find(c.event_id)) this.modal = { type: "conflict", eventId: c.event_id, items: c.items };
    this.paint();
    this.flush();
  }

  find(id) {
    return this.queue.find((e) => e.id === id);
  }

  drop(pred) {
    this.queue = this.queue.filter((e) => !pred(e));
    this.save();
  }

  save() {
    try {
      sessionStorage.setItem(OUTBOX, JSON.stringify(this.queue));
    } catch (e) {
      /* storage full or blocked: the events still go out from memory */
    }
  }

  // ------------------------------------------------------------------ browser -> server
  flush() {
    if (this.inflight || this.modal || !this.queue.length || !this.setTrigger) return;
    const batch = [];
    const touched = new Set();
    for (const e of this.queue) {
      const deps = e.kind === "accept_rest" ? null : Object.keys(e.labels);
      // An event that follows another change of the same sentence waits for that one's confirmation, so it
      // is checked against the version that change created (never against itself).
      if (batch.length && (deps === null ? true : deps.some((s) => touched.has(s)))) break;
      if (e.kind === "accept_rest" && batch.length) break;
      batch.push(this.resolved(e));
      (deps || []).forEach((s) => touched.add(s));
      if (batch.length >= MAX_BATCH) break;
    }
    this.seq = Math.max(this.seq, this.answered) + 1;
    this.inflight = { seq: this.seq, at: Date.now() };
    this.setTrigger("batch", { seq: this.seq, events: batch });
    this.paintStatus();
  }

  // The versions an event is checked against: the ones shown when the key was pressed, except for sentences
  // this tab changed just before (those take the version the server gave that change).
  resolved(e) {
    const versions = {};
    const saved = this.savedVersions(e.response_id);
    for (const [sid, v] of Object.entries(e.versions)) versions[sid] = v === "chain" && saved ? saved[sid] ?? null : v;
    return { ...e, versions };
  }

  // The responses this view shows (the pair view shows two), and the one with `id` among them.
  shownResponses() {
    return this.resp ? [this.resp] : [];
  }

  savedVersions(responseId) {
    const r = this.shownResponses().find((x) => x.id === responseId);
    if (!r) return null;
    const out = {};
    for (const s of r.sentences) out[String(s.id)] = s.version;
    return out;
  }

  retry() {
    if (this.inflight && Date.now() - this.inflight.at > resendWait(this.resends)) {
      this.inflight = null;
      this.resends += 1;
      this.flush();
    }
  }

  enqueue(kind, labels) {
    const r = this.resp;
    const versions = {};
    const pendingSids = new Set();
    for (const e of this.queue) if (e.response_id === r.id) Object.keys(e.labels).forEach((s) => pendingSids.add(s));
    const chainAll = this.queue.some((e) => e.response_id === r.id);
    for (const s of r.sentences) {
      const sid = String(s.id);
      if (kind === "accept_rest" || sid in labels)
        versions[sid] = pendingSids.has(sid) || (kind === "accept_rest" && chainAll) ? "chain" : s.version;
    }
    this.queue.push({ id: nextEventId(), response_id: r.id, kind, labels, versions, force: false });
    this.save();
    this.paint();
    this.flush();
  }

  // ------------------------------------------------------------------ labels as this tab sees them
  localLabels(r = this.resp) {
    const labels = new Map(r.sentences.map((s) => [String(s.id), s.label]));
    const pending = new Set();
    for (const e of this.queue) {
      if (e.response_id !== r.id) continue;
      if (e.kind === "set") {
        for (const [sid, v] of Object.entries(e.labels)) {
          labels.set(sid, v);
          pending.add(sid);
        }
      } else {
        r.sentences.forEach((s) => pending.add(String(s.id)));
      }
    }
    return { labels, pending };
  }

  shownScores(labels, r = this.resp) {
    if (r.sentences.some((s) => s.score === null)) return r.sentences.map(() => null);
    const entered = r.sentences.map((s) => labels.get(String(s.id)));
    const view = labelConditioned(
      r.sentences.map((s) => s.basis ?? s.score), // the score through the model's step calibration, if chosen
      entered,
      r.label,
      r.aggregation,
      this.levels.length
    );
    return r.problem_is_positive ? view : view.map((v) => 1 - v);
  }

  // ------------------------------------------------------------------ drawing
  renderBody() {
    const body = this.el(".fs-body");
    body.innerHTML = this.resp ? this.resp.html : ""; // app.render output: escaped text, allow-listed MathML
    this.renderList();
  }

  // One row per sentence of the open response: its label state ("saved" once the server has it).
  renderList() {
    const list = this.el(".fs-list");
    list.textContent = "";
    if (!this.resp) return;
    this.resp.sentences.forEach((s, i) => {
      const row = document.createElement("div");
      row.className = "fs-row";
      row.id = `fs-row-${i}`;
      const head = document.createElement("div");
      head.className = "fs-row-head";
      const text = document.createElement("div");
      text.className = "fs-row-text";
      text.innerHTML = s.html; // app.render output
      row.append(head, text);
      row.addEventListener("click", () => {
        this.cursor = i;
        this.paint();
      });
      list.append(row);
    });
  }

  paint() {
    if (!this.resp) return this.paintStatus();
    this.paintResponse(this.resp, "fs-sent", true);
    const focused = this.el(`#fs-sent-${this.cursor}`);
    if (focused && this.moved) {
      focused.scrollIntoView({ block: "nearest" });
      this.moved = false;
    }
    this.paintModal();
    this.paintStatus();
  }

  // Colours, label badges and (for the open response, `active`) the cursor and the rows of response `r`,
  // whose sentence i is the element with id `${prefix}-${i}`.
  paintResponse(r, prefix, active) {
    const { labels, pending } = this.localLabels(r);
    const shown = this.shownScores(labels, r);
    r.sentences.forEach((s, i) => {
      const sid = String(s.id);
      const label = labels.get(sid);
      const isPending = pending.has(sid);
      const v = shown[i];
      const span = this.el(`#${prefix}-${i}`);
      const bin = v === null ? null : Math.min(Math.floor(v * this.bins), this.bins - 1);
      const u = v === null ? 0 : 1 - Math.abs(2 * v - 1);
      const level = u >= this.uncertain[1] ? 2 : u >= this.uncertain[0] ? 1 : 0;
      const cls = ["fs-sent", bin === null ? "fs-none" : `fs-s${bin}`, `fs-u${level}`];
      if (active && i === this.cursor) cls.push("fs-focus");
      if (isPending) cls.push("fs-pending");
      if (span) {
        span.className = cls.join(" ");
        span.title = this.scoreText(s, v);
        let badge = span.querySelector(":scope > .fs-gold");
        if (label === null || label === undefined) {
          if (badge) badge.remove();
        } else {
          if (!badge) {
            badge = document.createElement("span");
            span.append(badge);
          }
          const bad = (label >= 1) === r.problem_is_positive;
          badge.className = `fs-gold fs-gold-${bad ? 1 : 0}${isPending ? " fs-gold-pending" : ""}`;
          badge.textContent = `${bad ? "✗" : "✓"}${label}`;
        }
      }
      const row = active ? this.el(`#fs-row-${i}`) : null;
      if (row) {
        row.className = `fs-row${i === this.cursor ? " fs-row-focus" : ""}`;
        const state =
          label === null || label === undefined
            ? isPending
              ? "clearing…"
              : "no label"
            : `label ${label} ${isPending ? "· saving…" : `· saved (${s.source || "?"}${s.annotator ? " by " + s.annotator : ""})`}`;
        row.querySelector(".fs-row-head").textContent = `${i === this.cursor ? "▶ " : ""}${i + 1}. ${this.scoreText(s, v)} · ${state}`;
        row.dataset.state = isPending ? "pending" : label === null || label === undefined ? "none" : "saved";
      }
    });
  }

  scoreText(s, v) {
    if (v === null) return "not scored";
    const given = `${this.scoreName} ${v.toFixed(2)}`;
    return this.showRaw && s.score !== null ? `${given} · model ${Number(s.score).toFixed(2)}` : given;
  }

  paintStatus() {
    const status = this.el(".fs-status");
    const n = this.queue.length;
    status.textContent = this.message || (n ? `Saving ${n} change${n === 1 ? "" : "s"}…` : "All changes saved");
    status.dataset.state = this.message ? "refused" : n ? "pending" : "saved";
  }

  paintModal() {
    const box = this.el(".fs-modal");
    box.textContent = "";
    box.hidden = !this.modal;
    if (!this.modal) return;
    const lines = [];
    if (this.modal.type === "question") {
      lines.push(`This change contradicts the response label: ${this.modal.warning}. Store it anyway?`);
      lines.push("Y: store anyway · Esc: cancel this change");
    } else {
      lines.push("Not saved: someone changed these labels after you opened this response.");
      for (const c of this.modal.items) lines.push(c.text);
      lines.push("Y: replace with mine · Esc: keep theirs");
    }
    lines.forEach((t, i) => {
      const p = document.createElement("div");
      p.className = i === 0 ? "fs-modal-title" : "fs-modal-line";
      p.textContent = t;
      box.append(p);
    });
  }

  toggleHelp() {
    const help = this.el(".fs-help");
    help.hidden = !help.hidden;
  }

  // ------------------------------------------------------------------ keys
  key(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || isTyping(ev) || !this.resp) return;
    const k = ev.key;
    if (k === "?") return this.handled(ev, () => this.toggleHelp());
    if (this.modal) {
      // The question blocks every other key, and its answer applies to the change it was raised for.
      if (k === "y" || k === "Y") return this.handled(ev, () => this.answer(true));
      if (k === "Escape") return this.handled(ev, () => this.answer(false));
      return this.handled(ev, () => {});
    }
    // After C, keys wait for the other criterion's response: a label must not land on the one being left.
    if (this.switchSeq) return k.length === 1 ? this.handled(ev, () => {}) : undefined;
    const n = this.resp.sentences.length;
    const lower = k.length === 1 ? k.toLowerCase() : k;
    if (lower === "j" || k === "ArrowDown") return this.handled(ev, () => this.move(Math.min(this.cursor + 1, n - 1)));
    if (lower === "k" || k === "ArrowUp") return this.handled(ev, () => this.move(Math.max(this.cursor - 1, 0)));
    if (lower === "f" && this.resp.first_error !== null) return this.handled(ev, () => this.move(this.resp.first_error));
    if (/^[0-9]$/.test(k) && this.levels.includes(Number(k)) && n) return this.handled(ev, () => this.label(Number(k)));
    if (lower === "x" && n) return this.handled(ev, () => this.label(null));
    if (lower === "a" && n) return this.handled(ev, () => this.restFine());
    if (lower === "n") return this.handled(ev, () => this.enqueue("accept_rest", {}));
    if (lower === "u") return this.handled(ev, () => this.enqueue("undo", {}));
    if (lower === "r") return this.handled(ev, () => ((this.showRaw = !this.showRaw), this.paint()));
    if (lower === "s" || lower === "p") return this.handled(ev, () => this.navigate(lower === "s" ? 1 : -1));
    if (lower === "c" && this.criteria.length > 1) return this.handled(ev, () => this.nextCriterion());
  }

  handled(ev, fn) {
    ev.preventDefault();
    ev.stopPropagation();
    fn();
  }

  move(i) {
    this.cursor = i;
    this.moved = true;
    this.paint();
  }

  label(level) {
    const s = this.resp.sentences[this.cursor];
    this.enqueue("set", { [String(s.id)]: level });
    if (level !== null) this.move(Math.min(this.cursor + 1, this.resp.sentences.length - 1));
  }

  restFine() {
    const { labels } = this.localLabels();
    const rest = {};
    for (const s of this.resp.sentences) {
      const v = labels.get(String(s.id));
      if (v === null || v === undefined) rest[String(s.id)] = this.resp.fine_level;
    }
    if (Object.keys(rest).length) this.enqueue("set", rest);
  }

  answer(yes) {
    const m = this.modal;
    const e = this.find(m.eventId);
    this.modal = null;
    if (e && yes && m.type === "question") e.force = true;
    if (e && yes && m.type === "conflict") for (const c of m.items) e.versions[String(c.sentence_id)] = c.version;
    if (e && !yes) this.queue = this.queue.filter((x) => x.id !== e.id);
    this.save();
    this.paint();
    this.flush();
  }

  navigate(delta) {
    this.seq = Math.max(this.seq, this.answered) + 1;
    this.setTrigger("nav", { seq: this.seq, delta });
  }

  // The same response judged on the next criterion of its group: the server opens it in that dataset.
  nextCriterion() {
    this.seq = Math.max(this.seq, this.answered) + 1;
    const seq = (this.switchSeq = this.seq);
    this.setTrigger("nav", { seq, criterion: 1 });
    // Never stuck: with no answer in 10 s (the server gone), keys work again on the response shown.
    setTimeout(() => {
      if (this.switchSeq === seq) this.switchSeq = 0;
    }, 10000);
  }
}

// The component's entry (the Python side appends `export default` with the view class it mounts).
export function mount(component, View) {
  const { data, parentElement, setTriggerValue } = component;
  // Streamlit calls this again with every new data, and runs the returned cleanup only when the component
  // unmounts: one view (and one key listener) per mounted component.
  let view = parentElement.__fsReview;
  if (!view) {
    view = parentElement.__fsReview = new View(parentElement);
    view.onKey = (ev) => view.key(ev);
    document.addEventListener("keydown", view.onKey, true);
  }
  view.setTrigger = setTriggerValue;
  view.receive(data);
  return () => {
    document.removeEventListener("keydown", view.onKey, true);
    clearInterval(view.timer);
    delete parentElement.__fsReview;
  };
}
