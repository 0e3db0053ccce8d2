import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { globMatcher } from "./glob.ts";
import { compileHolds, HOLD_NAME } from "./holds.ts";

// The obvious dynamic-programming matcher, as the reference the fast one must agree with.
function reference(pattern: string, text: string): boolean {
  let row = Array.from({ length: text.length + 1 }, (_, j) => j === 0);
  for (const c of pattern) {
    const next = new Array<boolean>(text.length + 1).fill(false);
    next[0] = c === "*" && row[0]!;
    for (let j = 1; j <= text.length; j++) next[j] = c === "*" ? row[j]! || next[j - 1]! : row[j - 1]! && text[j - 1] === c;
    row = next;
  }
  return row[text.length]!;
}

// Matches in a worker that is stopped after `ms`: a matcher that backtracks without end would
// otherwise hang the test run instead of failing it.
function matchWithin(ms: number, cases: [string, string][]): Promise<boolean[]> {
  const url = new URL("./glob.ts", import.meta.url).href;
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
     import(workerData.url).then(({ globMatcher }) => parentPort.postMessage(workerData.cases.map(([p, t]) => globMatcher(p)(t))));`,
    { eval: true, workerData: { url, cases } },
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`matching did not finish within ${ms} ms`));
    }, ms);
    worker.once("message", (result: boolean[]) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(result);
    });
    worker.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

describe("globMatcher", () => {
  it.each([
    ["linux-image-*", "linux-image-6.1.0-18-amd64", true],
    ["linux-image-*", "linux-image-", true],
    ["linux-image-*", "linux-headers-6.1", false],
    ["*-dev", "libssl-dev", true],
    ["*-dev", "libssl-dev2", false],
    ["lib*-dev", "libssl-dev", true],
    ["lib*ssl*", "libssl3", true],
    ["a*b*c", "abc", true],
    ["a*b*c", "acb", false],
    ["a*a", "a", false],
    ["*", "", true],
    ["**", "anything", true],
    ["openssl", "openssl", true],
    ["openssl", "openssl3", false],
    ["a.b", "axb", false],
    ["postgresql-1[6]", "postgresql-1[6]", true],
  ])("%s against %s is %s", (pattern, text, expected) => {
    expect(globMatcher(pattern)(text)).toBe(expected);
    expect(reference(pattern, text)).toBe(expected);
  });

  it("agrees with the reference matcher on every small pattern and text", () => {
    const words = (alphabet: string, max: number) => {
      const out = [""];
      for (let n = 1; n <= max; n++) for (const w of out.filter((x) => x.length === n - 1)) for (const c of alphabet) out.push(w + c);
      return out;
    };
    const patterns = words("ab*", 5);
    const texts = words("ab", 6);
    for (const p of patterns) {
      const m = globMatcher(p);
      for (const t of texts) if (m(t) !== reference(p, t)) throw new Error(`${JSON.stringify(p)} against ${JSON.stringify(t)}`);
    }
  });

  it("finishes at once on patterns that make a backtracking regex run for ever", async () => {
    const longName = "a".repeat(512);
    const hostile: [string, string][] = [
      ["*".repeat(200) + "X", "openssl-3.0.11-1~deb12u2"],
      ["*".repeat(254) + "X", longName],
      ["*a".repeat(127) + "X", longName],
      ["a*".repeat(127), longName + "b"],
      ["*aa*aa*aa*aa*aa*aa*aa*aa*aa*aa*aa*aa*b", longName],
    ];
    expect(await matchWithin(10_000, hostile)).toEqual(hostile.map(([p, t]) => reference(p, t)));
  });
});

describe("holds", () => {
  it("accept package names with stars, bounded in length", () => {
    expect(HOLD_NAME.test("linux-image-*")).toBe(true);
    expect(HOLD_NAME.test("*".repeat(255))).toBe(true);
    expect(HOLD_NAME.test("*".repeat(256))).toBe(false);
    expect(HOLD_NAME.test("-rf")).toBe(false);
    expect(HOLD_NAME.test("a b")).toBe(false);
  });

  it("apply to one source or to every source", () => {
    const holds = compileHolds([
      { source: "apt", name: "linux-image-*", reason: "kernel freeze" },
      { source: "*", name: "postgresql-16", reason: "" },
      { source: "", name: "a.b", reason: "" },
    ]);
    expect(holds.find("apt", "linux-image-6.1")?.reason).toBe("kernel freeze");
    expect(holds.find("dnf", "linux-image-6.1")).toBeUndefined();
    expect(holds.find("dnf", "postgresql-16")?.name).toBe("postgresql-16");
    expect(holds.find("snap", "a.b")?.name).toBe("a.b");
    expect(holds.find("snap", "axb")).toBeUndefined();
  });
});
