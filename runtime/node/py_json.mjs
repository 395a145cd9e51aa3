// Python's json.dumps in JavaScript, so both clients print the same bytes: ", " / ": " separators, ASCII-only
// strings, and floats always with a fraction (wrap a number in PyFloat to print it as a Python float).

export const PyFloat = class {
  constructor(value) {
    this.value = value;
  }
};

export function pyJson(value) {
  if (value instanceof PyFloat) {
    const v = value.value;
    return Number.isInteger(v) ? v.toFixed(1) : String(v);
  }
  if (Array.isArray(value)) return `[${value.map(pyJson).join(", ")}]`;
  if (value !== null && typeof value === "object")
    return `{${Object.entries(value).map(([k, v]) => `${pyJson(k)}: ${pyJson(v)}`).join(", ")}}`;
  if (typeof value === "string")
    return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return JSON.stringify(value);
}
