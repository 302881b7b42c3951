"""A small, strict reader of Go's text/template, for checking the Modelfiles ftwiz writes.

It knows the constructs Ollama templates use and ftwiz emits: `range $i, $m := .Messages`,
`if` / `else if` / `else` / `end`, field access ($m.Role, $.Messages), string literals, and the
functions eq, ne, and, or, not, len, slice. Trim markers ({{- -}}) trim whitespace as Go does.
Anything else raises, so a template ftwiz writes outside this subset fails the test instead
of being read loosely. Where a real `go` is installed, tests run the same template through Go.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1) and out is not None:
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", match.group(2).strip()))
        pos = match.end()
        if match.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(("text", template[pos:]))
    return out


def _parse(tokens: list[tuple[str, str]], i: int, stop: tuple[str, ...]) -> tuple[list[Any], int, str]:
    nodes: list[Any] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split(" ", 1)[0]
        if word in stop or value.startswith("else"):
            return nodes, i, value
        if word == "range":
            match = re.fullmatch(r"range \$(\w+), \$(\w+) := (\S+)", value)
            if not match:
                raise ValueError(f"unsupported range: {value}")
            body, i, end = _parse(tokens, i + 1, ("end",))
            nodes.append(("range", match.groups(), body))
            i += 1
        elif word == "if":
            branches = []
            cond = value[3:]
            while True:
                body, i, end = _parse(tokens, i + 1, ("end",))
                branches.append((cond, body))
                if end == "end":
                    break
                cond = end[len("else if "):] if end.startswith("else if ") else "true"
            nodes.append(("if", branches))
            i += 1
        else:
            nodes.append(("expr", value))
            i += 1
    if stop:
        raise ValueError(f"missing {stop}")
    return nodes, i, ""


def _split_args(expr: str) -> list[str]:
    args, depth, current, quoted = [], 0, "", False
    for ch in expr:
        if ch == '"' and not current.endswith("\\"):
            quoted = not quoted
        if not quoted and ch == "(":
            depth += 1
        if not quoted and ch == ")":
            depth -= 1
        if ch == " " and depth == 0 and not quoted:
            if current:
                args.append(current)
            current = ""
        else:
            current += ch
    if current:
        args.append(current)
    return args


def _eval(expr: str, scope: dict[str, Any]) -> Any:
    expr = expr.strip()
    if expr == "true":
        return True
    args = _split_args(expr)
    if len(args) == 1:
        arg = args[0]
        if arg.startswith("(") and arg.endswith(")"):
            return _eval(arg[1:-1], scope)
        if arg.startswith('"'):
            return shlex.split(arg)[0]
        if arg.isdigit():
            return int(arg)
        if arg.startswith("$"):
            name, *fields = arg[1:].split(".")
            value = scope[name or "$"]
            for field in fields:
                value = value[field]
            return value
        raise ValueError(f"unsupported expression: {arg}")
    fn, *rest = args
    values = [_eval(a, scope) for a in rest]
    functions = {
        "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "and": lambda *v: all(v), "or": lambda *v: any(v),
        "not": lambda v: not v, "len": len, "slice": lambda seq, start: seq[start:],
    }
    if fn not in functions:
        raise ValueError(f"unsupported function: {fn}")
    return functions[fn](*values)


def _render(nodes: list[Any], scope: dict[str, Any]) -> str:
    out = ""
    for node in nodes:
        if node[0] == "text":
            out += node[1]
        elif node[0] == "expr":
            out += str(_eval(node[1], scope))
        elif node[0] == "if":
            for cond, body in node[1]:
                if _eval(cond, scope):
                    out += _render(body, scope)
                    break
        elif node[0] == "range":
            (index, item, source), body = node[1], node[2]
            for i, value in enumerate(_eval(source.replace(".Messages", "$.Messages"), scope)):
                out += _render(body, {**scope, index: i, item: value})
    return out


def render(template: str, messages: list[dict[str, str]]) -> str:
    """The template applied to {"Messages": messages}, the way Ollama calls it for /api/chat."""
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    nodes, _, _ = _parse(_tokens(template), 0, ())
    return _render(nodes, {"$": data})


GO_PROGRAM = """package main

import (
\t"encoding/json"
\t"os"
\t"strings"
\t"text/template"
)

type Message struct{ Role, Content string }

type Case struct {
\tTemplate string
\tMessages []Message
}

func main() {
\tvar cases []Case
\tif err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
\t\tpanic(err)
\t}
\tout := []string{}
\tfor _, c := range cases {
\t\tvar b strings.Builder
\t\tt := template.Must(template.New("m").Parse(c.Template))
\t\tif err := t.Execute(&b, map[string]any{"Messages": c.Messages}); err != nil {
\t\t\tpanic(err)
\t\t}
\t\tout = append(out, b.String())
\t}
\tjson.NewEncoder(os.Stdout).Encode(out)
}
"""


def go_render_all(go_binary: str, cases: list[tuple[str, list[dict[str, str]]]]) -> list[str]:
    """Each (template, messages) rendered by Go's own text/template (a binary built from GO_PROGRAM)."""
    import json
    import subprocess

    payload = json.dumps([{"Template": t, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs]}
                          for t, msgs in cases])
    done = subprocess.run([go_binary], input=payload, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)
