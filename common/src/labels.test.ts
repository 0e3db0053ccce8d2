import { describe, expect, it } from "vitest";
import { LABEL, normaliseTags } from "./labels.ts";

describe("labels", () => {
  it("accepts what agents are tagged with and refuses the rest", () => {
    for (const ok of ["web", "db-1", "eu-west.prod", "ring:canary", "a".repeat(63)]) expect(LABEL.test(ok), ok).toBe(true);
    for (const bad of ["", "Web", "-web", "web server", "a".repeat(64), "web/1", "wéb"]) expect(LABEL.test(bad), bad).toBe(false);
  });

  it("stores tags trimmed, lower-cased and once each, in the order given", () => {
    expect(normaliseTags([" Web ", "db", "WEB", "db"])).toEqual(["web", "db"]);
  });
});
