import { describe, expect, it } from "vitest";
import { renewDue } from "./session.ts";
import type { Registration } from "./state/registration.ts";

const token = (issued: number, lifeMs: number) =>
  ({ accessTokenIssueTime: new Date(issued), accessTokenExpireTime: new Date(issued + lifeMs) }) as Registration;

describe("renewDue", () => {
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  it("renews at 80% of an hour-long token", () => {
    expect(renewDue(token(t0, 3600_000), new Date(t0 + 2879_000))).toBe(false);
    expect(renewDue(token(t0, 3600_000), new Date(t0 + 2880_000))).toBe(true);
  });
  it("renews a 5-minute token when less than 90 s are left", () => {
    expect(renewDue(token(t0, 300_000), new Date(t0 + 209_000))).toBe(false);
    expect(renewDue(token(t0, 300_000), new Date(t0 + 211_000))).toBe(true);
  });
  it("does not renew a fresh one-minute token on every call", () => {
    expect(renewDue(token(t0, 60_000), new Date(t0 + 1000))).toBe(false);
    expect(renewDue(token(t0, 60_000), new Date(t0 + 48_000))).toBe(true);
  });
  it("renews an expired token", () => {
    expect(renewDue(token(t0, 3600_000), new Date(t0 + 4000_000))).toBe(true);
  });
});
