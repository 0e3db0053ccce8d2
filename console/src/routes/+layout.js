// Everything runs in the browser against the control plane's API.
export const ssr = false;
export const prerender = false;
