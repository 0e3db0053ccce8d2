// Package-name patterns ("linux-image-*"): "*" matches any run of characters, none included;
// every other character matches itself. Holds use them on the control plane and on agents, so
// both sides match exactly alike.
//
// No regular expression is built from a pattern. A backtracking regex of "*" × 200 + "X" took
// exponential time and froze whoever matched it (issue 13). Here the pattern's literal pieces
// are found once each, left to right, each at its leftmost place after the previous one; for a
// pattern of "*" and literals that greedy choice is always right, so nothing is retried and the
// work is bounded by text length × pattern length.

// Longer patterns are refused where they are accepted (a package name is at most 255 characters).
export const MAX_PATTERN_LENGTH = 255;

export type Matcher = (text: string) => boolean;

export function globMatcher(pattern: string): Matcher {
  const pieces = pattern.split("*");
  if (pieces.length === 1) return (text) => text === pattern;
  const head = pieces[0]!;
  const tail = pieces[pieces.length - 1]!;
  const middle = pieces.slice(1, -1).filter((p) => p !== "");
  const least = head.length + tail.length + middle.reduce((n, p) => n + p.length, 0);
  return (text) => {
    if (text.length < least || !text.startsWith(head) || !text.endsWith(tail)) return false;
    const end = text.length - tail.length;
    let at = head.length;
    for (const piece of middle) {
      const found = text.indexOf(piece, at);
      if (found < 0 || found + piece.length > end) return false;
      at = found + piece.length;
    }
    return true;
  };
}
