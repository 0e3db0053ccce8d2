import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Submission } from "./submission.svelte.ts";

describe("a form's submission", () => {
  it("is busy while its request runs, clears the last refusal and says it succeeded", async () => {
    const submission = new Submission();
    submission.error = "an earlier refusal";
    let busyMeanwhile = false;
    let errorMeanwhile = "not read";
    const ok = await submission.run(async () => {
      busyMeanwhile = submission.busy;
      errorMeanwhile = submission.error;
    });
    expect(ok).toBe(true);
    expect([busyMeanwhile, errorMeanwhile]).toEqual([true, ""]);
    expect([submission.busy, submission.error]).toEqual([false, ""]);
  });

  it("keeps a refusal in the words the other pages use, and says it failed", async () => {
    const submission = new Submission();
    const refused = await submission.run(async () => {
      throw new ConnectError("only admins change windows", Code.PermissionDenied);
    });
    expect(refused).toBe(false);
    expect([submission.busy, submission.error]).toEqual([false, "Not allowed: only admins change windows"]);

    // A form's own check thrown inside the action reads as written.
    await submission.run(async () => {
      throw new Error('"4x" is not a duration');
    });
    expect(submission.error).toBe('"4x" is not a duration');
  });
});
