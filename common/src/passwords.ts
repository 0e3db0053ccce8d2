// The password rule the control plane enforces, shared with the console (its forms say how long
// a password must be, its tests' in-memory servers refuse as the real one does).

export const MIN_PASSWORD_LENGTH = 12;
export const MAX_PASSWORD_LENGTH = 256;

// Why a new password is refused, or undefined when it is acceptable.
export function passwordProblem(password: string, username: string): string | undefined {
  if (password.length < MIN_PASSWORD_LENGTH) return `the password must be at least ${MIN_PASSWORD_LENGTH} characters`;
  if (password.length > MAX_PASSWORD_LENGTH) return `the password must be at most ${MAX_PASSWORD_LENGTH} characters`;
  if (password.toLowerCase().includes(username.toLowerCase()) && username.length >= 3) return "the password must not contain the username";
  if (new Set(password).size < 5) return "the password is too repetitive";
  return undefined;
}
