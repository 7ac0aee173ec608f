"""A Jinja2 environment for templates a store writes: they read the documented variables and
nothing else, and their render is bounded.

A store's template override is text from outside (`PUT /admin/stores/M/templates/NAME`), and
it runs in the web process (checked when it is set) and in every worker (at send time). In a
plain Jinja2 Environment `{{ cycler.__init__.__globals__.os.popen('id').read() }}` runs a
command, and a `{% for %}` over `range(10**9)` holds a worker for good. Here:

- The environment is Jinja2's ImmutableSandboxedEnvironment, and stricter: no attribute of any
  Python object is reachable (dict items and list indexes are; of the loop only `loop.index`
  and the like), `str.format` is not, there are no globals (range, dict, cycler, joiner,
  namespace, lipsum), and only the filters in SAFE_FILTERS exist.
- Refused when the template is compiled, naming the line: a name that is not a documented
  variable (or set in the template), names and attributes starting with `_`, `self`, calls,
  macros, include/import/extends/blocks, `{% set %}` and `{% filter %}` blocks,
  `{% autoescape %}`, recursive loops, `**`, dict literals and lists of anything but constants.
- Bounded when it is rendered (RenderLimit): MAX_LOOP_ITERATIONS loop turns in all, every
  string, list or number built at most MAX_VALUE_CHARS (checked BEFORE it is built, so a
  `'x' * 10**9` never allocates), the output at most MAX_OUTPUT_CHARS, MAX_RENDER_SECONDS.
  Checking before building is why `~`, `+`, `*`, `%` and `join` are intercepted: a doubling
  chain of `{% set %}`s would otherwise reach gigabytes in forty lines.

A dict's items read as `lot.points` or `lot['points']`; an item named like a dict method
(`items`, `keys`, `get`...) only as `lot['items']`, since no method is reachable.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.filters import FILTERS, do_join, make_attrgetter
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, pass_context, pass_eval_context  # _PassArg: how Jinja 3.1 reads pass_*
from jinja2.visitor import NodeTransformer, NodeVisitor

MAX_LOOP_ITERATIONS = 10_000  # in all, nested loops included: a reminder names a handful of lots
MAX_VALUE_CHARS = 50_000  # any one string or list built while rendering (the shipped e-mail is ~4,000)
MAX_OUTPUT_CHARS = 50_000
MAX_RENDER_SECONDS = 2.0
MAX_INT_BITS = 128  # products of numbers: `{% set n = n * n %}` forty times is a billion digits

# Filters that cannot reach outside their value and grow it at most a few times (the result is
# checked anyway). Left out: attr (reads any attribute), format/center/indent/wordwrap/batch/slice/
# replace/round (a number argument builds gigabytes), safe (a shopper's name as raw HTML),
# striptags (quadratic in the number of tags), tojson/pprint/urlize/dictsort/items/xmlattr (not needed).
SAFE_FILTER_NAMES = ("abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float", "int", "last",
                     "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "reverse", "select",
                     "selectattr", "sort", "string", "sum", "title", "trim", "truncate", "unique", "upper",
                     "wordcount")
LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                             "depth0", "previtem", "nextitem"})

# Nodes a message template may contain; anything else is refused with the reason given here.
_ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr,
                  nodes.Getitem, nodes.Slice, nodes.If, nodes.For, nodes.Filter, nodes.Test, nodes.Compare,
                  nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.CondExpr, nodes.Concat,
                  nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Assign, nodes.With,
                  nodes.Keyword, nodes.List, nodes.Tuple)
_REFUSED = {
    nodes.Call: "calling a function or method", nodes.Macro: "macros", nodes.CallBlock: "{% call %} blocks",
    nodes.Include: "including another template", nodes.Import: "importing another template",
    nodes.FromImport: "importing another template", nodes.Extends: "extending another template",
    nodes.Block: "blocks (they serve template inheritance)", nodes.Pow: "the ** operator",
    nodes.AssignBlock: "a {% set %}...{% endset %} block (use {% set x = ... %})",
    nodes.FilterBlock: "{% filter %} blocks (use {{ ... | filter }})", nodes.Dict: "dict literals",
    nodes.Scope: "{% autoescape %} (shoppers' names stay escaped in HTML)",
    nodes.ScopedEvalContextModifier: "{% autoescape %} (shoppers' names stay escaped in HTML)",
    nodes.NSRef: "namespace attributes",
}


class RenderLimit(SecurityError):
    """A template went past one of the render's bounds."""


class _Budget:
    """What one render may still spend: loop turns and time."""

    def __init__(self):
        self.turns = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def turn(self) -> None:
        self.turns += 1
        if self.turns > MAX_LOOP_ITERATIONS:
            raise RenderLimit(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimit(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")


class _BudgetedContext(Context):
    """Jinja2 makes one context per render: the budget lives there, so renders never share it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = _Budget()


def size(value, limit: int = MAX_VALUE_CHARS) -> int:
    """Characters `value` takes as text, counted only up to just past `limit` (so a list that
    holds itself a million times is measured in constant time)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple)):
            total += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total


def _bounded(value, what: str = "a value"):
    if size(value) > MAX_VALUE_CHARS:
        raise RenderLimit(f"{what} longer than {MAX_VALUE_CHARS} characters")
    return value


@pass_context
def bounded_loop(context, iterable):
    budget = context.budget
    budget.turn()
    for item in iterable:
        budget.turn()
        yield item


@pass_eval_context
def bounded_concat(eval_ctx, items):
    """`a ~ b ~ c`, measured before it is joined."""
    total = 0
    for item in items:
        total += size(item if isinstance(item, str) else str(item))
        if total > MAX_VALUE_CHARS:
            raise RenderLimit(f"a string longer than {MAX_VALUE_CHARS} characters")
    return markup_join(items) if eval_ctx.autoescape else str_join(items)


@pass_eval_context
def bounded_join(eval_ctx, value, d: str = "", attribute=None):
    """The `join` filter, measured before it is joined (a long separator times many items)."""
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
    total = size(d) * max(len(items) - 1, 0)
    for item in items:
        total += size(item if isinstance(item, str) else str(item))
        if total > MAX_VALUE_CHARS:
            raise RenderLimit(f"a joined string longer than {MAX_VALUE_CHARS} characters")
    return do_join(eval_ctx, items, d)


def _checked_filter(name: str, function):
    """`function` as a filter whose result is bounded and which keeps to the time budget."""
    pass_arg = _PassArg.from_obj(function)

    @pass_context
    def checked(context, *args, **kwargs):
        context.budget.check_time()
        if pass_arg is _PassArg.context:
            args = (context, *args)
        elif pass_arg is _PassArg.eval_context:
            args = (context.eval_ctx, *args)
        elif pass_arg is _PassArg.environment:
            args = (context.environment, *args)
        return _bounded(function(*args, **kwargs), f"the result of |{name}")

    return checked


def _binop_size_before(operator: str, left, right) -> None:
    """Refuse an operation whose result would be too big, before Python builds it."""
    sequences = (str, list, tuple)
    if operator == "*":
        if isinstance(left, sequences) or isinstance(right, sequences):
            seq, times = (left, right) if isinstance(left, sequences) else (right, left)
            if isinstance(times, int) and times > 0 and size(seq) * times > MAX_VALUE_CHARS:
                raise RenderLimit(f"a repeated value longer than {MAX_VALUE_CHARS} characters")
        elif isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise RenderLimit("a number too large")
    elif operator == "+":
        if isinstance(left, sequences) and isinstance(right, sequences) and size(left) + size(right) > MAX_VALUE_CHARS:
            raise RenderLimit(f"a value longer than {MAX_VALUE_CHARS} characters")
    elif operator == "%" and isinstance(left, str):
        raise RenderLimit("%-formatting of strings is not allowed")  # '%999999999s' builds a gigabyte


class _Refuse(NodeVisitor):
    """Raise TemplateSyntaxError (with its line) at the first node a message template may not hold."""

    def __init__(self, name: str | None, filename: str | None):
        self.name, self.filename, self.line = name, filename, 1

    def fail(self, node, why: str):
        raise TemplateSyntaxError(f"{why} is not allowed in a message template", node.lineno or self.line,
                                  self.name, self.filename)

    def generic_visit(self, node, *args, **kwargs):
        self.line = node.lineno or self.line  # a node Jinja made itself (a Scope) has no line of its own
        for kind, why in _REFUSED.items():
            if isinstance(node, kind):
                self.fail(node, why)
        if not isinstance(node, _ALLOWED_NODES):
            self.fail(node, type(node).__name__)
        if isinstance(node, nodes.Name) and (node.name.startswith("_") or node.name == "self"):
            self.fail(node, f"the name {node.name!r}")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            self.fail(node, f"the attribute {node.attr!r}")
        if (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)
                and node.arg.value.startswith("_")):
            self.fail(node, f"the item {node.arg.value!r}")
        if isinstance(node, nodes.For) and node.recursive:
            self.fail(node, "a recursive loop")
        if (isinstance(node, nodes.List) or isinstance(node, nodes.Tuple) and node.ctx == "load") and not all(
                isinstance(item, nodes.Const) for item in node.items):
            self.fail(node, "a list of anything but constants")  # [l, l] nested forty times is 2**40 items as text
        if (isinstance(node, nodes.Keyword) and node.key == "attribute" and isinstance(node.value, nodes.Const)
                and any(part.startswith("_") for part in str(node.value.value).split("."))):
            self.fail(node, f"the attribute {node.value.value!r}")  # map/sort/sum(attribute='a.__class__')
        super().generic_visit(node, *args, **kwargs)


class _Bound(NodeTransformer):
    """Route every loop and every `~` through the environment's bounded versions."""

    def visit_For(self, node: nodes.For):
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_loop"), [node.iter], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat):
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("bounded_concat"), [nodes.List(node.nodes, lineno=node.lineno)],
                          [], None, None, lineno=node.lineno)


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """The environment for message templates; `variables` are the names a template may read."""

    context_class = _BudgetedContext
    intercepted_binops = frozenset({"*", "+", "%"})

    def __init__(self, variables, filters: dict | None = None, **options):
        super().__init__(undefined=StrictUndefined, **options)
        self.variables = frozenset(variables)
        self.globals.clear()  # range, dict, lipsum, cycler, joiner, namespace: none is needed
        allowed = {name: FILTERS[name] for name in SAFE_FILTER_NAMES}
        allowed["join"] = bounded_join
        allowed.update(filters or {})
        self.filters = {name: _checked_filter(name, function) for name, function in allowed.items()}
        self.bounded_loop = bounded_loop
        self.bounded_concat = bounded_concat

    def _parse(self, source, name, filename):
        template = super()._parse(source, name, filename)
        _Refuse(name, filename).visit(template)
        for unknown in sorted(meta.find_undeclared_variables(template) - self.variables):
            line = next((n.lineno for n in template.find_all(nodes.Name) if n.name == unknown), None)
            known = ", ".join(sorted(self.variables))
            raise TemplateSyntaxError(f"{unknown!r} is undefined (a template can use: {known})", line or 1, name,
                                      filename)
        template = _Bound().visit(template)
        template.set_environment(self)
        return template

    def is_safe_attribute(self, obj, attr, value) -> bool:
        # Nothing of a Python object: a template reads dict items and list indexes only.
        return isinstance(obj, LoopContext) and attr in LOOP_ATTRIBUTES

    def wrap_str_format(self, value):
        return None  # '{:>999999999}'.format(x) would build a gigabyte; no template needs str.format

    def call_binop(self, context, operator, left, right):
        context.budget.check_time()
        _binop_size_before(operator, left, right)
        return super().call_binop(context, operator, left, right)


def render(template, context: dict) -> str:
    """The template rendered, its output bounded as it streams (MAX_OUTPUT_CHARS)."""
    parts, total = [], 0
    for chunk in template.generate(context):
        total += len(chunk)
        if total > MAX_OUTPUT_CHARS:
            raise RenderLimit(f"the output is longer than {MAX_OUTPUT_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)
