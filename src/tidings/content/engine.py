"""The template engine behind one small interface; minijinja (Jinja syntax, Rust core) inside.

The Python binding calls itself experimental, so nothing outside this module imports it: a
swap to another engine (python-liquid is the measured fallback) touches this file alone.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import minijinja

from tidings.errors import TidingsError

if TYPE_CHECKING:
    from tidings.content.sandbox import TemplateSandbox

HTML_SUFFIX = ".html"
MACRO_NAMES = frozenset({"varargs", "kwargs", "caller"})
# Kinds minijinja reports at render time for names a template uses that do not exist: these
# are authoring mistakes whatever the data, unlike a type error that depends on the data.
# (UnknownMethod is not one: `profile.name.upper()` fails on the empty data of a trial render
# and works on a real string.)
UNKNOWN_NAME_KINDS = frozenset(
    {"UnknownFilter", "UnknownTest", "UnknownFunction", "TemplateNotFound"}
)


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """Why a template cannot compile or render, with a 1-based position when one is known."""

    message: str
    kind: str
    line: int | None = None
    column: int | None = None

    @property
    def is_unknown_name(self) -> bool:
        return self.kind in UNKNOWN_NAME_KINDS

    @property
    def is_out_of_fuel(self) -> bool:
        return self.kind == "OutOfFuel"


class RenderingError(TidingsError):
    """A template failed to render for this data; permanent for the message that hit it."""

    status = 422
    title = "Rendering failed"

    def __init__(self, template: str, problem: TemplateProblem) -> None:
        where = f" at line {problem.line}" if problem.line else ""
        super().__init__(f"{template}{where}: {problem.message}")
        self.template = template
        self.problem = problem


_HIDDEN = ""
CONTAINER_METHODS = frozenset(
    name for kind in (dict, list) for name in dir(kind) if not name.startswith("_")
)
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_METHOD_NAMES = "|".join(sorted(CONTAINER_METHODS))
# `.items` (not loop.index), the name quoted in a tag (x['items']), or the attr filter.
_METHOD_READ = re.compile(
    rf"(?<!\bloop)\.\s*(?:{_METHOD_NAMES})\b|['\"](?:{_METHOD_NAMES})['\"]|\|\s*attr\b"
)


class _TemplateList(list[Any]):
    """A JSON array whose list methods are hidden (see needs_views)."""

    __slots__ = ()
    # Shadowing methods with data is the point, so mypy's override check does not apply.
    append = clear = copy = count = extend = index = insert = pop = _HIDDEN  # type: ignore[assignment]
    remove = reverse = sort = _HIDDEN  # type: ignore[assignment]


class _TemplateMap(dict[str, Any]):
    """A JSON object whose dict methods are hidden (see needs_views)."""

    __slots__ = ()
    clear = copy = fromkeys = get = items = keys = pop = popitem = _HIDDEN  # type: ignore[assignment]
    setdefault = update = values = _HIDDEN  # type: ignore[assignment]


def needs_views(source: str) -> bool:
    """Whether a template names a dict or list method: `order.items`, `x['get']`, `|attr`.

    minijinja's Python binding resolves `x.name` on a dict or list with getattr when there is
    no such key, and lets templates call what it finds. So `{% for i in order.items %}` loops
    over dict.items when the call sent no `items` (an error instead of an empty loop), and
    `lines.append(...)` would change the caller's data. Templates that name such a method get
    the data as views whose methods read like missing keys (an empty string) and cannot be
    called. The views are copies and any dict subclass makes each lookup from the Rust side
    slower (docs/benchmarks.md), so templates that name no method get the data as it is.
    A name built at render time (`x['it' ~ 'ems']`) escapes this check; it can reach only
    the data of the message being rendered.
    """
    return any(_METHOD_READ.search(tag) for tag in _TAG.findall(source))


# A dotted chain of names in a tag (`context.order.items`), not part of a longer expression
# such as `f().items` or `x[0].items`.
_CHAIN = re.compile(r"(?<![\w.\])])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)+)")
_DOT_READ = re.compile(rf"(?<!\bloop)\.\s*(?:{_METHOD_NAMES})\b")
_OTHER_READ = re.compile(rf"['\"](?:{_METHOD_NAMES})['\"]|\|\s*attr\b")
_STATEMENT = re.compile(r"\{%-?\s*(\w+)(.*?)-?%\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_]\w*")


def guarded_paths(
    sources: Mapping[str, str], undeclared: Callable[[str], set[str]]
) -> tuple[tuple[str, ...], ...] | None:
    """Where templates that name dict or list methods name them, when that is known statically.

    Each path runs from a variable to a method-named name (`context.order.items` gives
    ("context", "order", "items")). None when some read cannot be pinned down so: a name read
    on something other than a variable's static path (a loop variable, a call's result), a
    quoted name, the attr filter, or a variable the template rebinds. `undeclared` lists a
    source's nested undeclared variables (`context.order.items`): a chain found in the text
    counts only when the engine agrees it reads that variable's data.
    """
    paths: set[tuple[str, ...]] = set()
    for source in sources.values():
        reads: set[str] | None = None
        for tag in _TAG.findall(source):
            if _OTHER_READ.search(tag):
                return None
            wanted = len(_DOT_READ.findall(tag))
            if not wanted:
                continue
            if reads is None:
                reads = undeclared(source)
            found = 0
            for match in _CHAIN.finditer(tag):
                names = [match.group(1), *(n.strip() for n in match.group(2).split(".")[1:])]
                last = max(
                    (
                        index
                        for index in range(1, len(names))
                        if names[index] in CONTAINER_METHODS and names[index - 1] != "loop"
                    ),
                    default=0,
                )
                if not last:
                    continue
                if ".".join(names) not in reads:
                    return None
                found += sum(
                    1
                    for index in range(1, last + 1)
                    if names[index] in CONTAINER_METHODS and names[index - 1] != "loop"
                )
                paths.add(tuple(names[: last + 1]))
            if found != wanted:
                return None
    roots = {path[0] for path in paths}
    for source in sources.values():
        for keyword, rest in _STATEMENT.findall(source):
            if keyword == "set":
                bound = rest.split("=", 1)[0]
            elif keyword == "for":
                bound = rest.split(" in ", 1)[0]
            elif keyword in ("with", "macro", "call", "import", "from"):
                bound = rest
            else:
                continue
            if roots.intersection(_NAME.findall(bound)):
                return None
    return tuple(sorted(paths))


class _Unguardable(Exception):
    """The data is not of the JSON shapes guard() knows."""


def guard(value: Any, path: Sequence[str]) -> Any:
    """`value` with the containers on `path` that lack the key a template reads there, and
    have a method of that name, replaced by shallow views (copies only along the path)."""
    name, rest = path[0], path[1:]
    kind = type(value)
    if kind is dict or kind is _TemplateMap:
        if name not in value:
            return _TemplateMap(value) if kind is dict and hasattr(value, name) else value
        if not rest:
            return value
        child = value[name]
        guarded = guard(child, rest)
        if guarded is child:
            return value
        copy = kind(value)
        copy[name] = guarded
        return copy
    if kind is list:
        return _TemplateList(value) if hasattr(value, name) else value
    if kind is _TemplateList or kind in _SCALARS:
        return value
    # Other containers (a caller's own Mapping, a tuple) are left to the full views.
    raise _Unguardable


def template_views(value: Any) -> Any:
    """A copy of JSON-shaped data as _TemplateMap and _TemplateList views."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or kind is _TemplateMap or isinstance(value, Mapping):
        return _TemplateMap({key: template_views(item) for key, item in value.items()})
    if kind is list or kind is tuple or kind is _TemplateList:
        return _TemplateList([template_views(item) for item in value])
    return value


# Checked first, by exact type: an isinstance(..., Mapping) per scalar costs more than the copy.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def trusted(value: str) -> str:
    """Marks a value Tidings produced itself (a signed URL) as needing no HTML escaping."""
    return minijinja.safe(value)


def _problem_from(error: minijinja.TemplateError, source: str | None) -> TemplateProblem:
    column = None
    if error.range is not None and source is not None:
        # minijinja reports byte offsets into the UTF-8 source.
        before = source.encode("utf-8")[: error.range[0]].decode("utf-8", errors="ignore")
        column = len(before) - (before.rfind("\n") + 1) + 1
    message = error.detail or error.kind
    kind = error.kind
    if kind == "OutOfFuel":
        message = "the template does too much work (out of fuel): simplify its loops"
    elif kind == "InvalidOperation" and "too large" in message:
        # minijinja's own cap on `"x" * n` and the like: a size problem, whatever the data.
        kind = "TooLarge"
    return TemplateProblem(message=message, kind=kind, line=error.line, column=column)


def _auto_escape(name: str) -> str | None:
    return "html" if name.endswith(HTML_SUFFIX) else None


class CompiledTemplates:
    """A set of named templates compiled once; render() is safe to call from many threads."""

    def __init__(self, environment: minijinja.Environment, sources: Mapping[str, str]) -> None:
        self._environment = environment
        self._sources = dict(sources)
        self.strict = any(needs_views(source) for source in sources.values())
        # Copying all the data into views doubles the cost of a render (docs/benchmarks.md);
        # when the method-named reads are all on known paths, only the containers on those
        # paths that would expose a method are wrapped, and only when they would.
        self._paths = (
            guarded_paths(
                sources,
                lambda source: set(environment.undeclared_variables_in_str(source, nested=True)),
            )
            if self.strict
            else None
        )

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def prepare(self, variables: Mapping[str, Any]) -> Mapping[str, Any]:
        """The data to render these templates with (once per message, for all of them).

        Without views, the templates get the caller's objects: give each message its own
        (decoded from JSON or loaded for it), not one shared across messages.
        """
        if not self.strict:
            return variables
        if self._paths is not None:
            data = dict(variables)
            try:
                for path in self._paths:
                    if path[0] not in data:
                        break
                    data[path[0]] = guard(data[path[0]], path[1:])
                else:
                    return data
            except _Unguardable:
                pass
        return {key: template_views(value) for key, value in variables.items()}

    def render(self, name: str, data: Mapping[str, Any], max_output: int) -> str:
        """Renders one template with data from prepare()."""
        try:
            output = self._environment.render_template(name, **data)
        except minijinja.TemplateError as error:
            raise RenderingError(name, _problem_from(error, self._sources.get(name))) from None
        except Exception as error:
            # A call a template made on the data views (e.g. `x.clear()`) raises a Python
            # error that the binding passes through unchanged: it is the template's fault.
            problem = TemplateProblem(f"invalid operation: {error}", "InvalidOperation")
            raise RenderingError(name, problem) from None
        if len(output) > max_output:
            raise RenderingError(
                name,
                TemplateProblem(f"output is larger than {max_output} characters", "TooLarge"),
            )
        return output


class TemplateEngine:
    """Compiles, checks and renders user-authored templates within fuel and size limits."""

    def __init__(
        self,
        *,
        fuel: int,
        max_source_bytes: int,
        cache_size: int = 512,
        sandbox: TemplateSandbox | None = None,
    ) -> None:
        self.fuel = fuel
        # Where authoring renders (checks, previews) run, capped in memory (content/sandbox.py);
        # None renders them in this process (unit tests).
        self.sandbox = sandbox
        self.max_source_bytes = max_source_bytes
        self.max_output_chars = max_source_bytes * 16
        self._cache: OrderedDict[tuple[tuple[str, str], ...], CompiledTemplates] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        # Only for syntax checks and variable listing; renders use per-content environments.
        self._scratch = self._new_environment()
        # Names the engine itself defines (range, dict, namespace, ...) and names that exist
        # inside macros: a template may read them without Tidings providing them.
        self.builtin_names = frozenset(self._scratch.globals) | MACRO_NAMES

    def _new_environment(self) -> minijinja.Environment:
        # "chainable": profile.address.city renders empty when address is missing, as authors
        # of personalized content expect, instead of failing the whole message.
        return minijinja.Environment(
            fuel=self.fuel,
            debug=False,
            undefined_behavior="chainable",
            auto_escape_callback=_auto_escape,
        )

    def syntax_problem(self, source: str) -> TemplateProblem | None:
        if len(source.encode("utf-8")) > self.max_source_bytes:
            return TemplateProblem(
                f"template is larger than {self.max_source_bytes} bytes", "TooLarge"
            )
        try:
            self._scratch.undeclared_variables_in_str(source)
        except minijinja.TemplateError as error:
            return _problem_from(error, source)
        return None

    def variables(self, source: str) -> set[str]:
        """Dotted paths the template reads from outside (e.g. profile.firstName)."""
        try:
            return self._scratch.undeclared_variables_in_str(source, nested=True)
        except minijinja.TemplateError:
            return set()

    def compile(self, sources: Mapping[str, str]) -> CompiledTemplates:
        """Compiles a set of templates, reusing an earlier compilation of the same sources.

        Raises RenderingError for the first template that does not compile.
        """
        key = tuple(sorted(sources.items()))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        environment = self._new_environment()
        for name, source in sources.items():
            problem = self.syntax_problem(source)
            if problem is not None:
                raise RenderingError(name, problem)
            environment.add_template(name, source)
        compiled = CompiledTemplates(environment, sources)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def render(self, sources: Mapping[str, str], variables: Mapping[str, Any]) -> dict[str, str]:
        compiled = self.compile(sources)
        data = compiled.prepare(variables)
        return {name: compiled.render(name, data, self.max_output_chars) for name in sources}
