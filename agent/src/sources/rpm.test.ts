import { describe, expect, it } from "vitest";
import { parseRpmQuery } from "./rpm.ts";

describe("parseRpmQuery", () => {
  it("keys versions by name and name.arch, epoch included", () => {
    const v = parseRpmQuery("openssl-libs.x86_64 1:3.2.2-2.fc40\nkernel.x86_64 6.10.1-200.fc40\nkernel.x86_64 6.11.3-200.fc40\npackage foo is not installed\n");
    expect(v.get("openssl-libs.x86_64")).toBe("1:3.2.2-2.fc40");
    expect(v.get("kernel")).toBe("6.11.3-200.fc40");
    expect(v.size).toBe(4);
  });
});
