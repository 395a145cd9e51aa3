// The part of JSON Schema (draft 2020-12) that runtime/manifest.schema.json uses, checked without a dependency:
// the twin of runtime/json_schema.py (same keywords, same wording of problems, so Python and Node refuse a manifest
// with the same line). Keywords: type, const, enum, minimum, pattern, required, properties, additionalProperties,
// items, allOf, if/then and local $ref; annotations are ignored.

import fs from "node:fs";

import { pyJson } from "./py_json.mjs";

export const SCHEMA = JSON.parse(fs.readFileSync(new URL("../manifest.schema.json", import.meta.url), "utf8"));

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value; // object, string, boolean
}

const is = (value, type) => typeName(value) === type || (type === "number" && typeName(value) === "integer");
const equal = (a, b) => JSON.stringify(a) === JSON.stringify(b);

export function firstProblem(instance, schema, root = schema, where = "") {
  const label = where || "the manifest";
  if ("$ref" in schema) {
    const target = schema.$ref.replace(/^#\//, "").split("/").reduce((node, part) => node[part], root);
    const problem = firstProblem(instance, target, root, where);
    if (problem) return problem;
  }
  if ("type" in schema) {
    const types = typeof schema.type === "string" ? [schema.type] : schema.type;
    if (!types.some((t) => is(instance, t))) return `${label} should be ${types.join(" or ")}, not ${typeName(instance)}`;
  }
  if ("const" in schema && !equal(instance, schema.const))
    return `${label} should be ${pyJson(schema.const)}, not ${pyJson(instance)}`;
  if ("enum" in schema && !schema.enum.some((v) => equal(v, instance)))
    return `${label} should be one of ${schema.enum.map(pyJson).join(", ")}, not ${pyJson(instance)}`;
  if ("minimum" in schema && is(instance, "number") && instance < schema.minimum)
    return `${label} should be at least ${schema.minimum}, not ${instance}`;
  if ("pattern" in schema && typeof instance === "string" && !new RegExp(schema.pattern, "u").test(instance))
    return `${label} should match /${schema.pattern}/, not ${pyJson(instance)}`;
  if (typeName(instance) === "object") {
    for (const key of schema.required ?? []) if (!(key in instance)) return `${where ? where + "." : ""}${key} is missing`;
    const properties = schema.properties ?? {};
    const extra = schema.additionalProperties ?? true;
    for (const [key, value] of Object.entries(instance)) {
      const sub = key in properties ? properties[key] : extra;
      const path = where ? `${where}.${key}` : key;
      if (sub === false) return `${path} is not expected`;
      if (typeof sub === "object") {
        const problem = firstProblem(value, sub, root, path);
        if (problem) return problem;
      }
    }
  }
  if (Array.isArray(instance) && "items" in schema)
    for (const [i, item] of instance.entries()) {
      const problem = firstProblem(item, schema.items, root, `${label}[${i}]`);
      if (problem) return problem;
    }
  for (const sub of schema.allOf ?? []) {
    const problem = firstProblem(instance, sub, root, where);
    if (problem) return problem;
  }
  if ("if" in schema && firstProblem(instance, schema.if, root, where) === null && "then" in schema)
    return firstProblem(instance, schema.then, root, where);
  return null;
}
