import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { classify, retryAfterMs } from "./errors.ts";

describe("retry-after", () => {
  it("waits at least the control plane's hint, spread up to twice it", () => {
    const limited = new ConnectError("too many Renew calls for this agent; retry after 12s", Code.ResourceExhausted, { "retry-after": "12" });
    expect(classify(limited)).toBe("transient");
    expect(retryAfterMs(limited, () => 0)).toBe(12_000);
    expect(retryAfterMs(limited, () => 0.999)).toBeLessThan(24_000);
  });

  it("is 0 without a usable hint", () => {
    expect(retryAfterMs(new ConnectError("busy", Code.ResourceExhausted))).toBe(0);
    expect(retryAfterMs(new ConnectError("busy", Code.ResourceExhausted, { "retry-after": "soon" }))).toBe(0);
    expect(retryAfterMs(new Error("socket hang up"))).toBe(0);
  });
});
