// The Pairs page: the two responses of a preference pair side by side in Review's view (ReviewView, in the same
// module), one cursor. H / L (or ← / →) move the cursor to the chosen / rejected side; every other key is
// Review's, on the side the cursor is on, and its labels take Review's way to the server. N (accept the model's
// labels given the response label) is not offered: a pair's responses have no label of their own.
//
// The colours are the server's, P(problem | the preference, the labels stored): a label changes them once
// it is stored (the panel redraws with the server's answer); until then the sentence shows its pending label.

class PairView extends ReviewView {
  constructor(root) {
    super(root);
    this.sides = []; // [chosen, rejected] as the server last sent them
    this.side = 0; // the side the cursor is on
    this.cursors = [0, 0]; // each side's cursor, kept while the other side is open
    this.pairKey = null;
    this.scoreName = "P(problem | preference, labels)";
  }

  receive(data) {
    const sides = data.pair ? data.pair.sides : [];
    const key = sides.map((r) => r.id).join(",");
    if (key !== this.pairKey) {
      // Another pair: both sides are drawn again, the cursor starts on the chosen response.
      this.pairKey = key;
      this.side = 0;
      this.cursors = [0, 0];
      this.resp = null;
    }
    this.sides = sides;
    super.receive({ ...data, response: sides[this.side] || null });
  }

  shownResponses() {
    return this.sides;
  }

  shownScores(labels, r = this.resp) {
    return r.sentences.map((s) => (s.colour === null || s.colour === undefined ? null : s.colour));
  }

  renderBody() {
    this.sides.forEach((r, k) => {
      this.el(`.fs-side-${k} .fs-side-title`).textContent = r.title;
      this.el(`.fs-side-${k} .fs-side-body`).innerHTML = r.html; // app.render output
    });
    this.renderList();
  }

  paint() {
    if (!this.resp) return this.paintStatus();
    this.sides.forEach((r, k) => {
      this.el(`.fs-side-${k}`).classList.toggle("fs-side-active", k === this.side);
      this.paintResponse(r, `fs-side${k}`, k === this.side);
    });
    const focused = this.el(`#fs-side${this.side}-${this.cursor}`);
    if (focused && this.moved) {
      focused.scrollIntoView({ block: "nearest" });
      this.moved = false;
    }
    this.paintModal();
    this.paintStatus();
  }

  key(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || isTyping(ev) || !this.resp || this.modal || this.switchSeq)
      return super.key(ev);
    const k = ev.key;
    const lower = k.length === 1 ? k.toLowerCase() : k;
    if (lower === "h" || k === "ArrowLeft") return this.handled(ev, () => this.toSide(0));
    if (lower === "l" || k === "ArrowRight") return this.handled(ev, () => this.toSide(1));
    if (lower === "n") return undefined; // not offered on a pair
    return super.key(ev);
  }

  toSide(k) {
    if (k === this.side || !this.sides[k]) return;
    this.cursors[this.side] = this.cursor;
    this.side = k;
    this.resp = this.sides[k];
    this.cursor = Math.min(this.cursors[k], Math.max(this.resp.sentences.length - 1, 0));
    this.moved = true;
    this.renderList();
    this.paint();
  }
}
