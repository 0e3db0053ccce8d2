// Counted words for people: "1 update", "3 updates", "1 update matches", "2 updates match".
// One place, so the console never prints "1 updates", "update(s)" or "1 update match". The
// helper itself is shared with the agent and the control plane (@redflag/common/plural).

import { plural } from "@redflag/common/plural";

export { pick, plural, pluralOrNo } from "@redflag/common/plural";

// Text written elsewhere with "N word(s)" or "N word(es)" in it, as older agents still write their
// messages, said as people say it: "found 121 update(s), 1 security" → "found 121 updates, 1
// security", "1 file system(s)" → "1 file system", "3 patch(es)" → "3 patches".
export function fixPlurals(text: string): string {
  return text.replace(/\b(\d+) ((?:[A-Za-z-]+ )?[A-Za-z][A-Za-z-]*)\((e?s)\)/g, (_, n: string, words: string, ending: string) =>
    plural(Number(n), words, words + ending),
  );
}
