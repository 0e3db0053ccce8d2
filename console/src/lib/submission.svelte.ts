import { describe } from "./api.ts";

// A form's save in flight and how the last one ended: `busy` while the request runs (the form
// disables its submit button and shows its busy label), `error` the refusal in the words the
// other pages use (`describe`). A check a form makes before sending anything sets `error`
// itself, so the form never looks busy for it.
export class Submission {
  busy = $state(false);
  error = $state("");

  // Runs `action` with the form busy and the last refusal cleared; a failure, including a
  // form's own check thrown inside `action`, becomes `error`. Whatever `action` does once the
  // request succeeds (telling the page, clearing the fields) runs while the form is still busy,
  // so the submit button cannot be pressed twice. Says whether it succeeded.
  async run(action: () => Promise<unknown>): Promise<boolean> {
    this.busy = true;
    this.error = "";
    try {
      await action();
      return true;
    } catch (err) {
      this.error = describe(err);
      return false;
    } finally {
      this.busy = false;
    }
  }
}
