"""CRD validation rules as kube-apiserver treats them: compiled, costed and run by a real CEL.

Evaluation is `cel` (common-expression-language: Python bindings of the cel-rust interpreter). Around it,
this module adds what Kubernetes adds around cel-go, so that a rule the server would refuse is refused
here too and no rule is ever skipped:

- the Kubernetes CEL libraries a rule may call (strings, lists, regex), registered as custom functions,
  as the server registers its libraries;
- a compile check: the rule parses, and names only known functions, `self`/`oldSelf`, macro variables
  and fields its schema declares;
- a conservative mirror of the server's static cost estimate: every string, list and map a rule reads
  must be bounded (`maxLength`, `maxItems`, `maxProperties`), and the worst case, times the lists and
  maps enclosing the rule, stays under the server's limits. It may refuse a little more than the
  server, never less. docs/embedded-cluster.md gives the numbers and their sources.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel

Schema = dict[str, Any]

# apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go
STATIC_ESTIMATED_COST_LIMIT = 10_000_000  # one rule, times the cardinality of the lists/maps around it
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000  # all rules of a CRD version together
# cel-go common/cost.go: a string traversal costs 0.1 per character, a regex match 0.25 x 0.25 per pair.
REGEX_COST_FACTOR = 0.25

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_STANDARD_FUNCTIONS = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "dyn", "type", "duration", "timestamp",
    "contains", "startsWith", "endsWith", "matches",
    "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours",
    "getMilliseconds", "getMinutes", "getMonth", "getSeconds",
})
_TYPE_NAMES = frozenset({"int", "uint", "double", "string", "bool", "bytes", "list", "map", "null_type", "type"})
# Functions whose result a static estimate cannot bound (cel-go gives them no size estimate).
_UNSIZED_RESULTS = frozenset({"string", "replace", "join", "format"})


def _index_of(target: Any, item: Any, start: int = 0) -> int:
    if isinstance(target, str):
        return target.find(item, start)
    return next((i for i, v in enumerate(target) if v == item), -1)


def _last_index_of(target: Any, item: Any) -> int:
    if isinstance(target, str):
        return target.rfind(item)
    return next((i for i in range(len(target) - 1, -1, -1) if target[i] == item), -1)


def _split(text: str, sep: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    return text.split(sep, limit - 1) if limit > 0 else text.split(sep)


def _find(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return match.group(0) if match else ""


# Kubernetes' CEL libraries (k8s.io/apiserver/pkg/cel/library and cel-go ext.Strings) that cel-rust
# lacks; a rule calling any other function is refused at CRD creation, as the server refuses it.
KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "charAt": lambda s, i: s[i] if i < len(s) else "",
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: "".join(c.lower() if c.isascii() else c for c in s),
    "upperAscii": lambda s: "".join(c.upper() if c.isascii() else c for c in s),
    "replace": lambda s, old, new, n=-1: s.replace(old, new, n),
    "split": _split,
    "substring": lambda s, start, end=None: s[start:end],
    "trim": lambda s: s.strip(),
    "join": lambda items, sep="": sep.join(items),
    "isSorted": lambda items: all(a <= b for a, b in itertools.pairwise(items)),
    "sum": lambda items: sum(items),
    "min": lambda items: min(items),
    "max": lambda items: max(items),
    "find": _find,
    "findAll": lambda s, p, n=-1: re.findall(p, s)[: n if n >= 0 else None],
}
_KNOWN_FUNCTIONS = _STANDARD_FUNCTIONS | KUBERNETES_FUNCTIONS.keys()


class RuleError(Exception):
    """A rule the server would refuse at CRD creation; the message says why, as the server does."""


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?[uU]?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
""", re.VERBOSE)
_OPERATORS = frozenset({"||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "!", "?", "in"})


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise RuleError(f"compilation failed: unexpected character at {pos}: {text[pos:pos + 10]!r}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup or "", match.group()))
        pos = match.end()
    return tokens


_ROOT_METADATA: Schema = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 253}, "generateName": {"type": "string", "maxLength": 253}}}
_MAP_KEY: Schema = {"type": "string"}  # map keys carry no maxLength: reading one is unbounded


def _is_map(node: Schema) -> bool:
    return isinstance(node.get("additionalProperties"), dict)


def _field(node: Schema, name: str, at_root: bool) -> Schema | None:
    """The schema of `node.name`, None when the schema does not declare it (a compile error)."""
    if at_root and name == "metadata":
        return _ROOT_METADATA
    props = node.get("properties") or {}
    if name in props:
        return dict(props[name])
    if _is_map(node):
        return dict(node["additionalProperties"])
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return {"x-kubernetes-preserve-unknown-fields": True}
    return None


def _element(node: Schema) -> Schema:
    if isinstance(node.get("items"), dict):
        return dict(node["items"])
    if _is_map(node):
        return dict(node["additionalProperties"])
    return {"x-kubernetes-preserve-unknown-fields": True}


def size_bound(node: Schema) -> tuple[int | None, str]:
    """The most characters/elements a value of this schema holds, or None and why it has no bound."""
    if node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
        return None, "an object with unknown fields"
    kind = node.get("type")
    if kind == "string" or node.get("x-kubernetes-int-or-string"):
        limit = node.get("maxLength")
        return (int(limit), "") if isinstance(limit, int) else (None, "a string without maxLength")
    if kind == "array":
        limit = node.get("maxItems")
        if not isinstance(limit, int):
            return None, "a list without maxItems"
        each, why = size_bound(_element(node))
        return (None, why) if each is None else (limit * each, "")
    if kind == "object" and _is_map(node):
        limit = node.get("maxProperties")
        if not isinstance(limit, int):
            return None, "a map without maxProperties"
        each, why = size_bound(node["additionalProperties"])
        return (None, why) if each is None else (limit * (each + 1), "")
    total = 1
    for sub in (node.get("properties") or {}).values():
        each, why = size_bound(sub)
        if each is None:
            return None, why
        total += each
    return total, ""


def _count_bound(node: Schema) -> tuple[int | None, str]:
    """How many elements a macro over this value visits."""
    if node.get("type") == "array":
        limit = node.get("maxItems")
        return (int(limit), "") if isinstance(limit, int) else (None, "a list without maxItems")
    if _is_map(node):
        limit = node.get("maxProperties")
        return (int(limit), "") if isinstance(limit, int) else (None, "a map without maxProperties")
    return size_bound(node)


@dataclass
class _Estimate:
    """What one pass over a rule's tokens finds: its operations, the sizes it reads, what is unbounded."""

    ops: int = 1
    size: int = 0
    matches: int = 0
    loops: list[int] = field(default_factory=list)
    unbounded: list[str] = field(default_factory=list)
    bound_vars: set[str] = field(default_factory=set)
    reads: set[tuple[str, ...]] = field(default_factory=set)  # field paths below self that the rule can see

    def cost(self) -> int | None:
        """Conservative worst case: every operation traverses everything the rule reads, once per loop."""
        if self.unbounded:
            return None
        loops = math.prod(self.loops)
        traversal = 1 + self.size  # cel-go charges 0.1 per character; a full unit here
        regex = self.matches * math.ceil(REGEX_COST_FACTOR * self.size) ** 2
        return (self.ops * traversal + regex) * loops


class _Scanner:
    """Resolve every `self.a.b` chain of a rule against its schema, and count what it costs."""

    def __init__(self, tokens: list[tuple[str, str]], schema: Schema, at_root: bool, where: str) -> None:
        self.tokens = tokens
        self.scope: dict[str, tuple[str, Schema]] = {"self": (where, schema), "oldSelf": (where, schema)}
        self.at_root = at_root
        self.estimate = _Estimate()

    def text(self, i: int) -> str:
        return self.tokens[i][1] if 0 <= i < len(self.tokens) else ""

    def kind(self, i: int) -> str:
        return self.tokens[i][0] if 0 <= i < len(self.tokens) else ""

    def matching(self, i: int) -> int:
        """The index of the bracket closing the one at i."""
        depth = 0
        for j in range(i, len(self.tokens)):
            if self.text(j) in ("(", "[", "{"):
                depth += 1
            elif self.text(j) in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    return j
        raise RuleError("compilation failed: unbalanced brackets")

    def scan(self, lo: int, hi: int) -> None:
        i = lo
        while i < hi:
            kind, text = self.tokens[i]
            if kind == "id" and text in self.scope and self.text(i - 1) != ".":
                i = self.chain(i, hi)
                continue
            if kind == "id" and self.text(i + 1) == "(":
                self.call(i)
            elif kind == "str":
                self.estimate.size += len(text)
            elif kind == "num":
                self.estimate.size += 1
            elif text in _OPERATORS:
                self.estimate.ops += 1
            i += 1

    def call(self, i: int) -> None:
        name = self.text(i)
        self.estimate.ops += 1
        if name == "matches":
            self.estimate.matches += 1
        if name in _UNSIZED_RESULTS and not (name == "string" and self.kind(i + 2) == "str"
                                             and self.text(i + 3) == ")"):
            self.estimate.unbounded.append(f"the result of {name}() has no size bound")
            self.estimate.unbounded = list(dict.fromkeys(self.estimate.unbounded))

    def chain(self, i: int, hi: int) -> int:
        """Follow `var(.field|[index])*` from token i; return the index after the chain."""
        path, node = self.scope[self.tokens[i][1]]
        at_root = self.at_root and self.tokens[i][1] in ("self", "oldSelf")
        presence = self.text(i - 2) == "has" and self.text(i - 1) == "("
        names: list[str] | None = [] if self.tokens[i][1] in ("self", "oldSelf") else None
        j = i + 1
        while j < hi:
            if self.text(j) == "." and self.kind(j + 1) == "id" and self.text(j + 2) != "(":
                name = self.text(j + 1)
                sub = _field(node, name, at_root)
                if sub is None:
                    raise RuleError(f"compilation failed: undefined field '{name}' of {path}")
                node, path, at_root = sub, f"{path}.{name}", False
                if names is not None:
                    names.append(name)
                self.estimate.ops += 1
                j += 2
            elif self.text(j) == "[":
                if names is not None:
                    self.estimate.reads.add(tuple(names))
                    names = None
                end = self.matching(j)
                self.scan(j + 1, end)
                node, path, at_root = _element(node), f"{path}[]", False
                self.estimate.ops += 1
                j = end + 1
            else:
                break
        if names is not None:
            self.estimate.reads.add(tuple(names))
        if self.text(j) == "." and self.text(j + 1) in MACROS and self.text(j + 2) == "(":
            self.macro(j, node, path)
        if presence and self.text(j) == ")":
            return j  # has(self.x) tests presence: it reads nothing
        size, why = size_bound(node)
        if size is None and f"{path} is {why}" not in self.estimate.unbounded:
            self.estimate.unbounded.append(f"{path} is {why}")
        elif size is not None:
            self.estimate.size += size
        return j

    def macro(self, j: int, node: Schema, path: str) -> None:
        var = self.text(j + 3)
        if self.kind(j + 3) == "id" and self.text(j + 4) == ",":
            element = _MAP_KEY if _is_map(node) else _element(node)
            self.scope[var] = (f"{path}[]", element)
            self.estimate.bound_vars.add(var)
        count, why = _count_bound(node)
        if count is None:
            self.estimate.unbounded.append(f"{path} is {why}")
        else:
            self.estimate.loops.append(max(count, 1))


def estimate(text: str, schema: Schema, at_root: bool, where: str = "self") -> _Estimate:
    """Check the fields a rule names against its schema, and estimate its worst-case cost; `where` names
    the data path of `self` in the reasons."""
    tokens = _tokens(text)
    scanner = _Scanner(tokens, schema, at_root, where)
    scanner.scan(0, len(tokens))
    return scanner.estimate


def _error_text(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else ''}"
    return str(exc).split(". Check that")[0]


def typed(value: Any, schema: Schema) -> Any:
    """JSON → the CEL types the schema declares: a `number` is a double even when written as 2."""
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {k: typed(v, props[k] if k in props else extra if isinstance(extra, dict) else {})
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [typed(v, schema["items"]) for v in value]
    return value


def project(value: Any, reads: Sequence[tuple[str, ...]]) -> Any:
    """Only the parts of `self` a rule can reach: converting a whole object to CEL values for a rule that
    reads one field would cost more than the rule (a rule reaches data only through `self` chains)."""
    if () in reads or not isinstance(value, dict):
        return value
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in reads:
        heads.setdefault(path[0], []).append(path[1:])
    return {key: project(value[key], rest) for key, rest in heads.items() if key in value}


@dataclass(frozen=True)
class Rule:
    """One compiled `x-kubernetes-validations` entry, at its place in the schema."""

    text: str
    message: str
    field_path: str
    schema: Schema
    program: cel.Program
    transition: bool
    cost: int | None
    unbounded: tuple[str, ...]
    reads: tuple[tuple[str, ...], ...]

    def evaluate(self, value: Any, old: Any = None) -> str | None:
        """None when the rule holds; else the cause's message, as the server words it."""
        variables = {"self": typed(project(value, self.reads), self.schema)}
        if self.transition:
            variables["oldSelf"] = typed(project(old, self.reads), self.schema)
        try:
            result = self.program.execute(cel.Context(variables=variables, functions=KUBERNETES_FUNCTIONS))
        except (RuntimeError, TypeError, KeyError, ValueError, IndexError, OverflowError) as exc:
            return f"{_error_text(exc)} evaluating rule: {self.message}"
        if result is True:
            return None
        if result is False:
            return self.message
        return f"rule did not evaluate to a bool, but {type(result).__name__} evaluating rule: {self.message}"


def compile_rule(entry: Any, schema: Schema, at_root: bool = False, where: str = "self") -> Rule:
    """Compile one rule as the server does at CRD creation; RuleError says why it would be refused."""
    if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str) or not entry["rule"].strip():
        raise RuleError("Required value: rule is required")
    text = entry["rule"]
    try:
        program = cel.compile(text)
    except ValueError as exc:
        raise RuleError(f"compilation failed: {exc}") from None
    refs = program.references()
    unknown = sorted(f for f in refs["functions"] if not f.startswith(("_", "!_", "-_", "@"))
                     and f not in _KNOWN_FUNCTIONS)
    if unknown:
        raise RuleError(f"compilation failed: undeclared reference to '{unknown[0]}'")
    found = estimate(text, schema, at_root, where)
    allowed = {"self", "oldSelf"} | _TYPE_NAMES | found.bound_vars
    strays = sorted(set(refs["variables"]) - allowed)
    if strays:
        raise RuleError(f"compilation failed: undeclared reference to '{strays[0]}'")
    message = str(entry.get("message") or "").strip() or f"failed rule: {text}"
    return Rule(text=text, message=message, field_path=str(entry.get("fieldPath", "")), schema=schema,
                program=program, transition="oldSelf" in refs["variables"], cost=found.cost(),
                unbounded=tuple(found.unbounded), reads=tuple(sorted(found.reads)))


def cost_message(what: str, cost: int | None, limit: int) -> str:
    """The server's wording (getCostErrorMessage), with the factor it would print."""
    factor = math.inf if cost is None else cost / limit
    shown = "more than 100x" if factor > 100 else f"{factor:f}x" if factor < 1.5 else f"{factor:.1f}x"
    return (f"Forbidden: {what} exceeds budget by factor of {shown} (try simplifying the rule(s), or adding "
            f"maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")


def walk_rules(schema: Schema, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Schema]]:
    """Every sub-schema with its data path (`"[]"` for list items, `"{}"` for map values)."""
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from walk_rules(sub, (*path, key))
    if isinstance(schema.get("items"), dict):
        yield from walk_rules(schema["items"], (*path, "[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk_rules(schema["additionalProperties"], (*path, "{}"))


def schema_path(prefix: str, path: Sequence[Any]) -> str:
    """A data path as the server names the schema node: `properties[spec].items.additionalProperties`."""
    parts = [prefix]
    for part in path:
        parts.append("items" if part == "[]" else "additionalProperties" if part == "{}" else
                     f"properties[{part}]")
    return ".".join(parts)
