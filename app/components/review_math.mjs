// The reviewer view in the browser: a mirror of fractal_core.mil.reviewer.label_conditioned (and of the
// consistency rule it reads, fractal_core.mil.semantics.inconsistent), so colours follow the labels as they
// are typed without waiting for the server. A parity test runs this file under node against the Python
// functions on random cases; change them together.

const EPS = 1e-9;

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; // numpy's round: halves go to the even number
}

// Whether no completion of the unlabelled sentences gives response label y (semantics.inconsistent).
function inconsistent(levels, known, y, aggregation) {
  const n = levels.length;
  let nKnown = 0;
  let top = -1;
  let low = Infinity;
  for (let i = 0; i < n; i++) {
    if (!known[i]) continue;
    nKnown += 1;
    top = Math.max(top, levels[i]);
    low = Math.min(low, levels[i]);
  }
  const complete = nKnown === n && n > 0;
  if (aggregation === "max") return top > y || (complete && top < y);
  if (aggregation === "min") return (nKnown > 0 && low < y) || (complete && low > y);
  throw new Error(`no consistency rule for ${aggregation}`);
}

// P(others hold c positives) for c = 0..m, the sentences in `idx` except `skip`.
function countPmf(p, idx, skip) {
  let pmf = [1];
  for (const j of idx) {
    if (j === skip) continue;
    const next = new Array(pmf.length + 1).fill(0);
    for (let c = 0; c < pmf.length; c++) {
      next[c] += pmf[c] * (1 - p[j]);
      next[c + 1] += pmf[c] * p[j];
    }
    pmf = next;
  }
  return pmf;
}

// P(level_i >= 1 | response label, entered labels) for every sentence of one response.
// scores: stored P(level >= 1); entered: level, or null where unlabelled; responseLabel: null -> marginals.
export function labelConditioned(scores, entered, responseLabel, aggregation, nLevels = 2) {
  const n = scores.length;
  const known = entered.map((e) => e !== null && e !== undefined && Number.isFinite(Number(e)));
  const lev = entered.map((e, i) => (known[i] ? Number(e) : -1));
  const z = lev.map((e, i) => known[i] && e >= 1);
  const unl = known.map((k) => !k);
  const num = (s) => (s === null || s === undefined || Number.isNaN(Number(s)) ? NaN : Number(s));
  const p = scores.map((s, i) => (unl[i] ? Math.min(Math.max(Number.isNaN(num(s)) ? 0.5 : num(s), EPS), 1 - EPS) : 0.5));
  const out = scores.map((s, i) => (known[i] ? (z[i] ? 1 : 0) : Math.min(Math.max(Number.isNaN(num(s)) ? 0 : num(s), 0), 1)));
  const y = responseLabel === null || responseLabel === undefined ? NaN : Number(responseLabel);
  if (!Number.isFinite(y) || n === 0) return out;
  let nUnl = 0;
  let posEntered = 0;
  let negEntered = 0;
  for (let i = 0; i < n; i++) {
    if (unl[i]) nUnl += 1;
    else if (z[i]) posEntered += 1;
    else negEntered += 1;
  }
  let countLeft = 0;
  let contradicts;
  if (aggregation === "mean") {
    const k = Math.min(Math.max(roundHalfEven(y * n), 0), n);
    countLeft = k - posEntered;
    contradicts = countLeft < 0 || countLeft > nUnl;
  } else {
    contradicts = inconsistent(lev, known, y, aggregation);
  }
  if (contradicts) return out; // evidence the model gives probability 0: marginals, for a person to resolve
  const label = aggregation === "mean" ? y : y >= 1 ? 1 : 0;
  const positive = label >= 1;
  const idx = [];
  for (let i = 0; i < n; i++) if (unl[i]) idx.push(i);
  if (aggregation === "max") {
    let logNone = 0;
    for (const i of idx) logNone += Math.log1p(-p[i]);
    for (const i of idx) {
      if (!positive) out[i] = 0;
      else if (posEntered === 0) out[i] = p[i] / -Math.expm1(logNone);
    }
  } else if (aggregation === "min") {
    let logAll = 0;
    for (const i of idx) logAll += Math.log(p[i]);
    for (const i of idx) {
      if (positive) out[i] = 1;
      else if (negEntered === 0) out[i] = (p[i] * -Math.expm1(logAll - Math.log(p[i]))) / -Math.expm1(logAll);
    }
  } else {
    for (const i of idx) {
      const others = countPmf(p, idx, i);
      const a = countLeft >= 1 ? others[countLeft - 1] ?? 0 : 0; // the others hold countLeft - 1
      const b = others[countLeft] ?? 0; // the others hold countLeft
      const total = p[i] * a + (1 - p[i]) * b;
      out[i] = total > 0 ? (p[i] * a) / total : 0;
    }
  }
  return out.map((v) => Math.min(Math.max(Number.isFinite(v) ? v : 0, 0), 1));
}
