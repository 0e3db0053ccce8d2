// Counted words for people: "1 update", "3 updates", "1 update matches", "2 updates match".
// One place, so the console never prints "1 updates", "update(s)" or "1 update match".

// The word (or phrase) for n, without the number: pick(1, "matches", "match") → "matches".
export function pick(n: number | bigint, one: string, many = `${one}s`): string {
  return Number(n) === 1 ? one : many;
}

// n with its word: plural(3, "update") → "3 updates"; plural(1, "person", "people") → "1 person".
// The forms can carry a verb: plural(1, "update matches", "updates match") → "1 update matches".
export function plural(n: number | bigint, one: string, many = `${one}s`): string {
  return `${n} ${pick(n, one, many)}`;
}

// Text written elsewhere (an agent's or the server's message) with "N word(s)" in it, said as
// people say it: "found 121 update(s), 1 security" → "found 121 updates, 1 security", "1 file
// system(s)" → "1 file system".
export function fixPlurals(text: string): string {
  return text.replace(/\b(\d+) ((?:[A-Za-z-]+ )?[A-Za-z][A-Za-z-]*)\(s\)/g, (_, n: string, words: string) => plural(Number(n), words));
}
