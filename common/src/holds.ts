import { globMatcher, type Matcher, MAX_PATTERN_LENGTH } from "./glob.ts";
import { packageNamePattern } from "./package-name.ts";

// A hold keeps packages as they are: `source` names one package source or every one ("*"; an
// empty source means the same), `name` a package or a pattern ("linux-image-*").
export interface HoldRule {
  source: string;
  name: string;
}

// What a hold's name may be: a package name in which "*" stands for any run of characters.
// Checked in linear time (one character class); the length is bounded with it.
export const HOLD_NAME = packageNamePattern("*", MAX_PATTERN_LENGTH);

// At most this many holds per scope (fleet-wide, or one agent), so at most twice as many apply to
// one agent: every hold is sent to agents in their config and checked against every package an
// install touches.
export const MAX_HOLDS_PER_SCOPE = 250;

export interface CompiledHolds<T extends HoldRule> {
  // The first hold that applies to a package of `source`, or undefined.
  find(source: string, name: string): T | undefined;
}

// Compiles each pattern once, for matching many packages against the same holds.
export function compileHolds<T extends HoldRule>(holds: readonly T[]): CompiledHolds<T> {
  const rules: { hold: T; source: string; matches: Matcher }[] = holds.map((hold) => ({
    hold,
    source: hold.source || "*",
    matches: globMatcher(hold.name),
  }));
  return {
    find(source, name) {
      return rules.find((r) => (r.source === "*" || r.source === source) && r.matches(name))?.hold;
    },
  };
}
