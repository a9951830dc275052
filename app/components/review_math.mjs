// The reviewer view in the browser: a mirror of fractal_core.mil.reviewer.label_conditioned, so colours follow
// the labels as they are typed without waiting for the server. A parity test runs this file under node against
// the Python function on random cases; change both together.

// P(sentence i is a problem | response label, scores, entered labels) for every sentence.
// scores: P(level >= 1) per sentence; entered: level per sentence, null where unlabelled;
// responseLabel: null -> the marginals. Returns an array of numbers in [0, 1].
export function labelConditioned(scores, entered, responseLabel, aggregation, nLevels = 2) {
  const n = scores.length;
  const p = scores.map((s) => Math.min(Math.max(Number(s), 0), 1));
  const known = entered.map((e) => e !== null && e !== undefined && !Number.isNaN(e));
  const asProblem = (e) => (e >= 1 ? 1 : 0);
  let out = p.slice();
  if (responseLabel !== null && responseLabel !== undefined) {
    const y = Number(responseLabel);
    const unl = [];
    for (let i = 0; i < n; i++) if (!known[i]) unl.push(i);
    if (aggregation === "max") {
      if (y < 1) {
        out = p.map(() => 0);
      } else if (!entered.some((e, i) => known[i] && e >= 1)) {
        let none = 1;
        for (const i of unl) none *= 1 - p[i];
        const z = 1 - none;
        out = p.map((v) => (z > 0 ? v / Math.max(z, 1e-12) : v));
      }
    } else if (aggregation === "min") {
      if (y >= 1) {
        out = p.map(() => 1);
      } else if (!entered.some((e, i) => known[i] && e < 1)) {
        let all = 1;
        for (const i of unl) all *= p[i];
        out = p.map((v) => (v - all) / Math.max(1 - all, 1e-12));
      }
    }
  }
  return out.map((v, i) => (known[i] ? asProblem(entered[i]) : Math.min(Math.max(v, 0), 1)));
}
