"""The part of JSON Schema (draft 2020-12) that manifest.schema.json uses, checked without a dependency.

Keywords: type, const, enum, minimum, pattern, required, properties, additionalProperties, items, allOf, if/then and
local $ref ("#/$defs/..."); annotations (title, description, $defs, ...) are ignored. ``first_problem`` returns one
readable line for the first violation, so a runtime can refuse a manifest in one line; the Node.js client
(runtime/node/manifest_schema.mjs) checks the same keywords and words its problems alike.
"""

from __future__ import annotations

import json
import re

JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return next(name for name, kind in JSON_TYPES.items() if isinstance(value, kind))


def _is(value, type_: str) -> bool:
    actual = _type_name(value)
    return actual == type_ or (type_ == "number" and actual == "integer")


def first_problem(instance, schema: dict, root: dict | None = None, where: str = "") -> str | None:
    """The first place where ``instance`` breaks ``schema``, as "<path> <problem>", or None when it conforms."""
    root = root if root is not None else schema
    label = where or "the manifest"
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        if problem := first_problem(instance, target, root, where):
            return problem
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is(instance, t) for t in types):
            return f"{label} should be {' or '.join(types)}, not {_type_name(instance)}"
    if "const" in schema and (instance != schema["const"]
                              or isinstance(instance, bool) != isinstance(schema["const"], bool)):
        return f"{label} should be {json.dumps(schema['const'])}, not {json.dumps(instance)}"
    if "enum" in schema and instance not in schema["enum"]:
        return f"{label} should be one of {', '.join(map(json.dumps, schema['enum']))}, not {json.dumps(instance)}"
    if "minimum" in schema and _is(instance, "number") and instance < schema["minimum"]:
        return f"{label} should be at least {schema['minimum']}, not {instance}"
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        return f"{label} should match /{schema['pattern']}/, not {json.dumps(instance)}"
    if isinstance(instance, dict):
        for key in schema.get("required", ()):
            if key not in instance:
                return f"{where + '.' if where else ''}{key} is missing"
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for key, value in instance.items():
            sub = properties.get(key, extra)
            path = f"{where}.{key}" if where else key
            if sub is False:
                return f"{path} is not expected"
            if isinstance(sub, dict) and (problem := first_problem(value, sub, root, path)):
                return problem
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            if problem := first_problem(item, schema["items"], root, f"{label}[{i}]"):
                return problem
    for sub in schema.get("allOf", ()):
        if problem := first_problem(instance, sub, root, where):
            return problem
    if "if" in schema and first_problem(instance, schema["if"], root, where) is None and "then" in schema:
        return first_problem(instance, schema["then"], root, where)
    return None
