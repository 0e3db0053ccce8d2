import { describe, expect, it } from "vitest";
import { pick, plural, pluralOrNo } from "./plural.ts";

describe("counted words", () => {
  it("says one in the singular and zero or many in the plural", () => {
    expect(plural(0, "update")).toBe("0 updates");
    expect(plural(1, "update")).toBe("1 update");
    expect(plural(121, "update")).toBe("121 updates");
    expect(plural(1n, "host")).toBe("1 host");
    expect(plural(2n, "host")).toBe("2 hosts");
    expect(plural(1, "file system")).toBe("1 file system");
    expect(plural(3, "file system")).toBe("3 file systems");
    expect(plural(1, "CPU")).toBe("1 CPU");
    expect(plural(2, "CPU")).toBe("2 CPUs");
  });

  it("takes the plural it is given for words that do not just add an s", () => {
    expect(plural(1, "patch", "patches")).toBe("1 patch");
    expect(plural(3, "patch", "patches")).toBe("3 patches");
    expect(plural(0, "patch", "patches")).toBe("0 patches");
    expect(plural(1, "person", "people")).toBe("1 person");
    expect(plural(2, "person", "people")).toBe("2 people");
  });

  it("agrees a verb with its count", () => {
    expect(plural(1, "update matches", "updates match")).toBe("1 update matches");
    expect(plural(5, "update matches", "updates match")).toBe("5 updates match");
    expect(pick(1, "is", "are")).toBe("is");
    expect(pick(0, "is", "are")).toBe("are");
    expect(pick(3, "is", "are")).toBe("are");
  });

  it('says "no" for none where asked to', () => {
    expect(pluralOrNo(0, "update")).toBe("no updates");
    expect(pluralOrNo(0n, "patch", "patches")).toBe("no patches");
    expect(pluralOrNo(1, "update")).toBe("1 update");
    expect(pluralOrNo(78, "update")).toBe("78 updates");
  });
});
