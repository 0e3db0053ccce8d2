import { describe, expect, it } from "vitest";
import { fixPlurals, pick, plural } from "./plural.ts";

describe("the plural helper", () => {
  it("counts a word, with the plural made or given", () => {
    expect(plural(0, "update")).toBe("0 updates");
    expect(plural(1, "update")).toBe("1 update");
    expect(plural(121, "update")).toBe("121 updates");
    expect(plural(1n, "host")).toBe("1 host");
    expect(plural(2, "person", "people")).toBe("2 people");
    expect(plural(1, "person", "people")).toBe("1 person");
  });

  it("agrees a verb with its count", () => {
    expect(plural(1, "update matches", "updates match")).toBe("1 update matches");
    expect(plural(5, "update matches", "updates match")).toBe("5 updates match");
    expect(pick(1, "is", "are")).toBe("is");
    expect(pick(3, "is", "are")).toBe("are");
  });

  it('turns "N word(s)" in other programs\' messages into the right form', () => {
    expect(fixPlurals("found 121 update(s), 3 security")).toBe("found 121 updates, 3 security");
    expect(fixPlurals("found 1 update(s), 0 security")).toBe("found 1 update, 0 security");
    expect(fixPlurals("2 of 3 update(s) failed; 1 tag(s) could not be checked")).toBe("2 of 3 updates failed; 1 tag could not be checked");
    expect(fixPlurals("1 file system(s), fullest / at 12.4%; 3 file system(s)")).toBe("1 file system, fullest / at 12.4%; 3 file systems");
    expect(fixPlurals("4 update(s), 3 security; 1 patch(es) needed; 3 patch(es) needed")).toBe("4 updates, 3 security; 1 patch needed; 3 patches needed");
    // Messages already written as people write them stay as they are.
    expect(fixPlurals("found no updates; 1 file system, fullest / at 12%")).toBe("found no updates; 1 file system, fullest / at 12%");
    // Nothing else is touched.
    expect(fixPlurals("apt: exit code 100 (see output)")).toBe("apt: exit code 100 (see output)");
    expect(fixPlurals("")).toBe("");
  });
});
