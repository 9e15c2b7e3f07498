"""What any engine needs of a caller's JSON schema before it can enforce it: bounded and well-founded.

Two shapes break every grammar compiler and validator, whatever the engine:

- nesting hundreds of levels deep, which overflows Python's stack in `jsonschema` (a 500) long before
  it means anything: the document may nest at most `MAX_SCHEMA_NESTING` objects and arrays;
- a `$ref` cycle that never descends into a property or an item (`a` is `b`, `b` is `a`): it defines
  no value at all, and a grammar built from it matches nothing (an empty reply).

Both are refused with a 400 that says what to change.
"""

from __future__ import annotations

from typing import Any

from galerne.errors import InvalidRequestError

MAX_SCHEMA_NESTING = 64
# Keywords whose subschemas describe the same value as their parent: a `$ref` cycle through these alone
# never reaches a property or an item, so it never ends.
_SAME_VALUE_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_KEYWORDS = ("not", "if", "then", "else")


def check_schema_limits(schema: Any, *, param: str) -> None:
    """Raise a 400 when `schema` nests too deeply or has a `$ref` cycle that defines nothing."""
    if _nesting(schema) > MAX_SCHEMA_NESTING:
        raise InvalidRequestError(
            f"the schema nests objects and arrays more than {MAX_SCHEMA_NESTING} levels deep, the most supported. "
            "Flatten it, for example by moving repeated parts into `$defs` and referring to them with `$ref`",
            param=param,
        )
    cycle = _ref_cycle(schema)
    if cycle:
        raise InvalidRequestError(
            f"the schema's `$ref`s form a loop that never reaches a value ({' -> '.join(cycle)}): each refers to "
            "the next without describing a property or an item, so no JSON value can match. "
            "Give the definitions in the loop a real type (for example an object with properties)",
            param=param,
        )


def _nesting(document: Any) -> int:
    """How many objects and arrays deep `document` goes, without recursion (it may be very deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_SCHEMA_NESTING:  # deep enough to refuse: no need to walk further
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _ref_cycle(root: Any) -> list[str]:
    """The first `$ref` loop that stays on the same value (as a list of refs), or an empty list.

    A depth-first search over the graph "ref -> refs that describe the same value", iterative and
    visiting each ref once, so a large or adversarial schema costs linear time.
    """
    edges = {ref: _same_value_refs(_resolve(root, ref)) for ref in _all_refs(root)}
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path = [start]
        branches = [iter(edges[start])]
        while branches:
            next_ref = next(branches[-1], None)
            if next_ref is None:
                done.add(path.pop())
                branches.pop()
            elif next_ref in path:
                return [*path[path.index(next_ref) :], next_ref]
            elif next_ref not in done and next_ref in edges:
                path.append(next_ref)
                branches.append(iter(edges[next_ref]))
    return []


def _same_value_refs(node: Any) -> list[str]:
    """Local `$ref`s that describe the same value as `node` (its own, and those of its combinators)."""
    refs: list[str] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if not isinstance(current, dict):
            continue
        ref = current.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            refs.append(ref)
        for key in _SAME_VALUE_LIST_KEYWORDS:
            if isinstance(current.get(key), list):
                pending.extend(current[key])
        pending.extend(current[key] for key in _SAME_VALUE_KEYWORDS if key in current)
    return refs


def _all_refs(document: Any) -> list[str]:
    refs: set[str] = set()
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                refs.add(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(refs)


def _resolve(root: Any, ref: str) -> Any:
    """The subschema a local `$ref` (`#/$defs/a`) points to; None when it points nowhere."""
    node = root
    for part in ref.removeprefix("#").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node
