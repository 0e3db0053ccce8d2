import { PACKAGE_SOURCES } from "@redflag/common/sources";
import { describe, expect, it } from "vitest";
import { INSTALLERS, SCANNERS, scannerNamed, SOURCES } from "./index.ts";

describe("the package-source registry", () => {
  it("has exactly the sources of @redflag/common, in its order", () => {
    expect(SOURCES.map((s) => s.name)).toEqual([...PACKAGE_SOURCES]);
    expect(SCANNERS.map((s) => s.name)).toEqual([...PACKAGE_SOURCES]);
    expect([...INSTALLERS.keys()]).toEqual([...PACKAGE_SOURCES]);
  });

  it("pairs each source's scanner with its own installer", () => {
    for (const s of SOURCES) {
      expect(s.scanner.name).toBe(s.name);
      expect(s.installer.source).toBe(s.name);
      expect(scannerNamed(s.name)).toBe(s.scanner);
      expect(INSTALLERS.get(s.name)).toBe(s.installer);
    }
    expect(scannerNamed("system")).toBeUndefined();
  });
});
