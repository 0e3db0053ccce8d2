import { describe, expect, it } from "vitest";
import { HOLD_NAME } from "./holds.ts";
import { PACKAGE_ARCH, PACKAGE_NAME, PACKAGE_VERSION, sourceNamePattern } from "./package-name.ts";

describe("the package-name rule", () => {
  it("takes the names of every source and nothing a tool would read as an option or syntax", () => {
    for (const name of ["openssl", "libc6:amd64", "node@20", "user/tap/formula", "org.mozilla.firefox", "Microsoft.PowerToys", "ghcr.io/org/app:1.2", "@sha256:abc", "g++"]) {
      expect(PACKAGE_NAME.test(name), name).toBe(true);
    }
    for (const name of ["", "-rf", "a b", "a;b", "$(x)", "a'b", "*", "x".repeat(256)]) expect(PACKAGE_NAME.test(name), name).toBe(false);
    expect(PACKAGE_NAME.test("x".repeat(255))).toBe(true);
  });

  it("is stricter for sources whose tools take files, URLs, groups or repositories where a name goes", () => {
    for (const source of ["apt", "dnf", "zypper", "pacman", "snap", "flatpak", "winget", "windows_update"]) {
      expect(sourceNamePattern(source)?.test("curl"), source).toBe(true);
      for (const name of ["./x.deb", "https://e.com/x.rpm", "@group", "pattern:x", "curl/sid"]) expect(sourceNamePattern(source)?.test(name), `${source} ${name}`).toBe(false);
    }
    expect(sourceNamePattern("brew")?.test("user/tap/formula")).toBe(true);
    expect(sourceNamePattern("brew")?.test("a/b/c/d")).toBe(false);
    expect(sourceNamePattern("docker")).toBeUndefined();
  });

  it("with * is the hold-name rule", () => {
    expect(HOLD_NAME.test("linux-image-*")).toBe(true);
    expect(HOLD_NAME.test("-*")).toBe(false);
  });

  it("checks versions and architectures", () => {
    expect(PACKAGE_VERSION.test("1:2.3~rc1+b2")).toBe(true);
    expect(PACKAGE_VERSION.test("-1")).toBe(false);
    expect(PACKAGE_ARCH.test("")).toBe(true);
    expect(PACKAGE_ARCH.test("x86_64")).toBe(true);
    expect(PACKAGE_ARCH.test("x86 64")).toBe(false);
  });
});
