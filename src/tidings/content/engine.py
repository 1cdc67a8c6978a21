"""The template engine behind one small interface; minijinja (Jinja syntax, Rust core) inside.

The Python binding calls itself experimental, so nothing outside this module imports it: a
swap to another engine (python-liquid is the measured fallback) touches this file alone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import minijinja

from tidings.errors import TidingsError

HTML_SUFFIX = ".html"
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


class _TemplateMap:
    """Read-only view of a JSON object for templates.

    minijinja's Python binding resolves `x.name` on a Python dict with getattr when the key is
    missing, so `context.items` would be dict.items and `context.clear()` would empty the
    caller's dict. This view exposes keys and nothing callable. `items` must exist for the
    binding to treat the object as a map; as an empty string it renders and loops like a
    missing key would.
    """

    __slots__ = ("_data",)
    items = ""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return template_data(self._data[key])

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __str__(self) -> str:
        return str(self._data)


class _TemplateList:
    """Read-only view of a JSON array for templates (no append, pop, index, ...)."""

    __slots__ = ("_data",)

    def __init__(self, data: Sequence[Any]) -> None:
        self._data = data

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _TemplateList(self._data[index])
        return template_data(self._data[index])

    def __iter__(self) -> Any:
        return (template_data(item) for item in self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __str__(self) -> str:
        return str(self._data)


# Registered rather than inherited: the binding needs isinstance(x, Sequence) to treat it as a
# list, and inheriting would bring Sequence's public methods into reach of templates.
Sequence.register(_TemplateList)


def template_data(value: Any) -> Any:
    """Wraps JSON-shaped data so templates can read it and do nothing else with it."""
    if isinstance(value, Mapping):
        return _TemplateMap(value)
    if isinstance(value, list | tuple):
        return _TemplateList(value)
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
    return TemplateProblem(message=message, kind=error.kind, line=error.line, column=column)


def _auto_escape(name: str) -> str | None:
    return "html" if name.endswith(HTML_SUFFIX) else None


class CompiledTemplates:
    """A set of named templates compiled once; render() is safe to call from many threads."""

    def __init__(self, environment: minijinja.Environment, sources: Mapping[str, str]) -> None:
        self._environment = environment
        self._sources = dict(sources)

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def render(self, name: str, variables: Mapping[str, Any], max_output: int) -> str:
        data = {key: template_data(value) for key, value in variables.items()}
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
        return {name: compiled.render(name, variables, self.max_output_chars) for name in sources}
