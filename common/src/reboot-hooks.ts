// Reboot hooks: a Reboot command names an executable the host's owner put in the agent's hooks
// directory; it never carries a command line. The control plane refuses other names, and the
// agent checks them again before it looks for the file.

// A file name: no path separator, no leading dot or dash.
export const HOOK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const HOOK_NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit (up to 64), no path";

// How long a hook may run.
export const MIN_HOOK_TIMEOUT_SECONDS = 1;
export const MAX_HOOK_TIMEOUT_SECONDS = 1800;
export const DEFAULT_HOOK_TIMEOUT_SECONDS = 300;

// The limit a Reboot's hook_timeout_seconds stands for (0: the default).
export const hookTimeoutSeconds = (given: number) => (given === 0 ? DEFAULT_HOOK_TIMEOUT_SECONDS : Math.min(Math.max(given, MIN_HOOK_TIMEOUT_SECONDS), MAX_HOOK_TIMEOUT_SECONDS));
