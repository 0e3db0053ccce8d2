// Version order of RPM (dnf, zypper) and pacman: [epoch:]version[-release], each part compared
// segment by segment (rpmvercmp). Used to tell which versions a tool lists are older than the
// installed one, so a rollback list never offers an upgrade.

const isDigit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9";
const isAlpha = (c: string | undefined) => c !== undefined && /[A-Za-z]/.test(c);
const isAlnum = (c: string | undefined) => isDigit(c) || isAlpha(c);

// rpmvercmp: -1, 0 or 1. "~" sorts before anything (pre-releases), "^" after the base version.
// `alpm`: pacman's variant, where a trailing letter segment is older ("1.0a" < "1.0"); rpm
// reads it as newer.
export function segmentCompare(a: string, b: string, alpm = false): number {
  if (a === b) return 0;
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < a.length && !isAlnum(a[i]) && a[i] !== "~" && a[i] !== "^") i++;
    while (j < b.length && !isAlnum(b[j]) && b[j] !== "~" && b[j] !== "^") j++;
    if (a[i] === "~" || b[j] === "~") {
      if (a[i] !== "~") return 1;
      if (b[j] !== "~") return -1;
      i++;
      j++;
      continue;
    }
    if (a[i] === "^" || b[j] === "^") {
      if (i >= a.length) return -1;
      if (j >= b.length) return 1;
      if (a[i] !== "^") return 1;
      if (b[j] !== "^") return -1;
      i++;
      j++;
      continue;
    }
    if (i >= a.length || j >= b.length) break;
    const numeric = isDigit(a[i]);
    const take = (text: string, from: number) => {
      let end = from;
      while (end < text.length && (numeric ? isDigit(text[end]) : isAlpha(text[end]))) end++;
      return text.slice(from, end);
    };
    const sa = take(a, i);
    const sb = take(b, j);
    // A numeric segment is newer than a letter one.
    if (sb === "") return numeric ? 1 : -1;
    i += sa.length;
    j += sb.length;
    if (numeric) {
      const na = sa.replace(/^0+/, "");
      const nb = sb.replace(/^0+/, "");
      if (na.length !== nb.length) return na.length > nb.length ? 1 : -1;
      if (na !== nb) return na > nb ? 1 : -1;
    } else if (sa !== sb) {
      return sa > sb ? 1 : -1;
    }
  }
  if (i >= a.length && j >= b.length) return 0;
  if (alpm) return (i >= a.length && !isAlpha(b[j])) || isAlpha(a[i]) ? -1 : 1;
  return i >= a.length ? -1 : 1;
}

function parseEvr(text: string): { epoch: number; version: string; release: string } {
  const colon = text.indexOf(":");
  const epoch = colon > 0 && /^\d+$/.test(text.slice(0, colon)) ? Number(text.slice(0, colon)) : 0;
  const rest = colon > 0 ? text.slice(colon + 1) : text;
  const dash = rest.lastIndexOf("-");
  return dash > 0 ? { epoch, version: rest.slice(0, dash), release: rest.slice(dash + 1) } : { epoch, version: rest, release: "" };
}

// Compares two [epoch:]version[-release] strings: negative when a is older than b.
export function compareEvr(a: string, b: string, alpm = false): number {
  const x = parseEvr(a);
  const y = parseEvr(b);
  if (x.epoch !== y.epoch) return x.epoch < y.epoch ? -1 : 1;
  const version = segmentCompare(x.version, y.version, alpm);
  if (version !== 0 || !x.release || !y.release) return version;
  return segmentCompare(x.release, y.release, alpm);
}
