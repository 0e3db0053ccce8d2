// Counted words for people: "1 update", "3 updates", "1 file system", "no updates". The agent's
// messages, the CLI's output and the console all count through here, so none of them prints
// "1 updates" or "update(s)".

// The word (or phrase) for n, without the number: pick(1, "matches", "match") → "matches".
// The plural is the word with an "s" unless it is given: pick(2, "patch", "patches").
export function pick(n: number | bigint, one: string, many = `${one}s`): string {
  return Number(n) === 1 ? one : many;
}

// n with its word: plural(3, "update") → "3 updates"; plural(1, "person", "people") → "1 person".
// The forms can carry a verb: plural(1, "update matches", "updates match") → "1 update matches".
export function plural(n: number | bigint, one: string, many = `${one}s`): string {
  return `${n} ${pick(n, one, many)}`;
}

// As plural(), but nothing is "no …" where a sentence reads better that way: pluralOrNo(0,
// "update") → "no updates", pluralOrNo(1, "update") → "1 update".
export function pluralOrNo(n: number | bigint, one: string, many = `${one}s`): string {
  return Number(n) === 0 ? `no ${many}` : plural(n, one, many);
}
