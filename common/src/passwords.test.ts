import { describe, expect, it } from "vitest";
import { MAX_PASSWORD_LENGTH, passwordProblem } from "./passwords.ts";

describe("passwordProblem", () => {
  it("accepts a long, varied password", () => {
    expect(passwordProblem("correct horse battery", "ana")).toBeUndefined();
  });

  it("names what is wrong, in the words the server sends", () => {
    expect(passwordProblem("short", "ana")).toBe("the password must be at least 12 characters");
    expect(passwordProblem("x".repeat(MAX_PASSWORD_LENGTH) + "yz", "ana")).toBe("the password must be at most 256 characters");
    expect(passwordProblem("Banana split sundae", "ana")).toBe("the password must not contain the username");
    expect(passwordProblem("abab abab abab", "ana")).toBe("the password is too repetitive");
  });

  it("ignores usernames too short to matter (2 characters)", () => {
    expect(passwordProblem("bo has a new one", "bo")).toBeUndefined();
  });
});
