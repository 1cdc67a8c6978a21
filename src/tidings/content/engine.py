"""The template engine behind one small interface; minijinja (Jinja syntax, Rust core) inside.

The Python binding calls itself experimental, so nothing outside this module imports it: a
swap to another engine (python-liquid is the measured fallback) touches this file alone.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import minijinja

from tidings.errors import TidingsError

HTML_SUFFIX = ".html"
MACRO_NAMES = frozenset({"varargs", "kwargs", "caller"})
# Kinds minijinja reports at render time for names a template uses that do not exist: these
# are authoring mistakes whatever the data, unlike a type error that depends on the data.
UNKNOWN_NAME_KINDS = frozenset(
    {"UnknownFilter", "UnknownTest", "UnknownFunction", "UnknownMethod", "TemplateNotFound"}
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
DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_METHOD_NAMES = "|".join(sorted(DICT_METHODS))
# `.items`, or the name quoted anywhere in a tag: x['items'], x|attr("items").
_DICT_METHOD_READ = re.compile(rf"\.\s*(?:{_METHOD_NAMES})\b|['\"](?:{_METHOD_NAMES})['\"]")


class _TemplateList(list[Any]):
    """A JSON array as templates see it: readable, with every list method hidden.

    minijinja's Python binding resolves `x.name` with getattr and calls methods on Python
    objects, so a plain list would offer `append` and `extend` (a doubling loop exhausts memory
    long before it exhausts fuel). Class attributes shadow them; an empty string renders and
    loops like a missing key, and calling it is a rendering error.
    """

    __slots__ = ()
    # Shadowing methods with data is the point, so mypy's override check does not apply.
    append = clear = copy = count = extend = index = insert = pop = _HIDDEN  # type: ignore[assignment]
    remove = reverse = sort = _HIDDEN  # type: ignore[assignment]


class _TemplateMap(dict[str, Any]):
    """A JSON object whose dict methods are hidden the same way, for templates that need it."""

    __slots__ = ()
    clear = copy = fromkeys = get = items = keys = pop = popitem = _HIDDEN  # type: ignore[assignment]
    setdefault = update = values = _HIDDEN  # type: ignore[assignment]


def reads_dict_method_names(source: str) -> bool:
    """Whether a template reads a key named like a dict method (`order.items`, `x['get']`).

    A name built at render time ('it' ~ 'ems') escapes this check; then a missing key reads
    as the method of the per-message copy, which is harmless.
    """
    return any(_DICT_METHOD_READ.search(tag) for tag in _TAG.findall(source))


def template_data(value: Any, strict: bool) -> Any:
    """A per-message copy of JSON-shaped data for templates.

    Objects are plain dict copies unless `strict`: any dict subclass makes every lookup from
    the Rust side about 2.5x slower (docs/benchmarks.md), while the list subclass costs nothing
    measurable. A template can call a plain dict's methods, but only on this copy, so
    `context.clear()` cannot reach the caller's data or the next message's. Where a template
    reads a name like `items`, a missing key would resolve to dict.items: such templates get
    `_TemplateMap` (strict), where the name reads like a missing key.
    """
    kind = type(value)
    if kind is dict or isinstance(value, Mapping):
        copied = {key: template_data(item, strict) for key, item in value.items()}
        return _TemplateMap(copied) if strict else copied
    if kind is list or kind is tuple or kind is _TemplateList:
        return _TemplateList([template_data(item, strict) for item in value])
    return value


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
    if error.kind == "OutOfFuel":
        message = "the template does too much work (out of fuel): simplify its loops"
    return TemplateProblem(message=message, kind=error.kind, line=error.line, column=column)


def _auto_escape(name: str) -> str | None:
    return "html" if name.endswith(HTML_SUFFIX) else None


class CompiledTemplates:
    """A set of named templates compiled once; render() is safe to call from many threads."""

    def __init__(self, environment: minijinja.Environment, sources: Mapping[str, str]) -> None:
        self._environment = environment
        self._sources = dict(sources)
        self.strict = any(reads_dict_method_names(source) for source in sources.values())

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def prepare(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The data to render these templates with: convert once per message."""
        return {key: template_data(value, self.strict) for key, value in variables.items()}

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

    def __init__(self, *, fuel: int, max_source_bytes: int, cache_size: int = 512) -> None:
        self.fuel = fuel
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
