// Tags and groups: the labels that pick agents (SetAgentLabels, update selections, fleet
// upgrades). Written as people type them, stored trimmed and lower-cased; each must be a label.

export const LABEL = /^[a-z0-9][a-z0-9._:-]{0,62}$/;

// What a label may hold, in words, for the messages that refuse one.
export const LABEL_RULE = "lower-case letters, digits, '.', '_', ':' or '-' (up to 63)";

// An agent carries at most this many tags.
export const MAX_TAGS = 32;

// How a label is stored: trimmed and lower-cased.
export const normaliseLabel = (value: string) => value.trim().toLowerCase();

// Tags as stored: each normalised, each once, in the order given.
export const normaliseTags = (tags: readonly string[]) => [...new Set(tags.map(normaliseLabel))];
