import { create } from "@bufbuild/protobuf";
import { CircuitBreakerConfigSchema } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { createBreakers } from "./breaker.ts";

const config = create(CircuitBreakerConfigSchema, { failureThreshold: 3, windowSeconds: 60, cooldownSeconds: 300 });

describe("circuit breakers", () => {
  it("open after the threshold of failures within the window, then skip with the reason", () => {
    let t = 0;
    const b = createBreakers(() => t);
    for (let i = 0; i < 3; i++) {
      expect(b.check("dnf", config).allowed).toBe(true);
      b.record("dnf", config, false);
      t += 10_000;
    }
    const decision = b.check("dnf", config);
    expect(decision).toMatchObject({ allowed: false, state: "open" });
    expect(decision.allowed === false && decision.reason).toMatch(/circuit breaker open after 3 failures in 60s; next try after 1970-01-01T00:05:20/);
    // Other subsystems are unaffected.
    expect(b.check("apt", config).allowed).toBe(true);
  });

  it("forget failures older than the window", () => {
    let t = 0;
    const b = createBreakers(() => t);
    b.record("dnf", config, false);
    b.record("dnf", config, false);
    t += 61_000;
    b.record("dnf", config, false);
    expect(b.state("dnf")).toBe("closed");
  });

  it("let one trial through after the cool-down; success closes, failure reopens", () => {
    let t = 0;
    const b = createBreakers(() => t);
    for (let i = 0; i < 3; i++) b.record("snap", config, false);
    t += 300_000;
    expect(b.check("snap", config)).toEqual({ allowed: true, state: "half_open" });
    expect(b.check("snap", config).allowed).toBe(false);
    b.record("snap", config, false);
    expect(b.state("snap")).toBe("open");
    t += 299_000;
    expect(b.check("snap", config).allowed).toBe(false);
    t += 1000;
    expect(b.check("snap", config).allowed).toBe(true);
    b.record("snap", config, true);
    expect(b.state("snap")).toBe("closed");
    expect(b.check("snap", config)).toEqual({ allowed: true, state: "closed" });
  });

  it("never trip when the threshold is 0 or no config is given", () => {
    const b = createBreakers(() => 0);
    for (let i = 0; i < 10; i++) b.record("apt", undefined, false);
    expect(b.check("apt", undefined).allowed).toBe(true);
  });
});
