"""The manifest's table classes, assembled from the plug-ins, and its JSON Schema.

A model table's class comes from its ``task``; a specialization's or validation's from
its model's task. Backends with options add an optional sub-table named after them to
every specialization (``[specializations.X.qaic]``). Tables whose family cannot be known
(their model is unknown) are checked against the union of every family's fields, so their
other mistakes are still reported.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from .plugins import Plugins
from .tables import ModelBase, ProjectTable, SpecializationBase, StepTable, Table, ValidationBase


class TableClasses:
    """The pydantic class of every table kind for each task, built once per plug-in set."""

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins
        self._cache: dict[tuple[str, str | None], type[Table]] = {}

    def model(self, task: str) -> type[ModelBase]:
        return self.plugins.tasks.get(task).model_table

    def specialization(self, task: str | None) -> type[SpecializationBase]:
        cls = self._cached("specializations", task, self._specialization)
        assert issubclass(cls, SpecializationBase)
        return cls

    def validation(self, task: str | None) -> type[ValidationBase]:
        cls = self._cached("validations", task, self._validation)
        assert issubclass(cls, ValidationBase)
        return cls

    def of(self, table: str, task: str | None) -> type[Table]:
        if table == "models":
            return self.model(task) if task else ModelBase
        if table == "specializations":
            return self.specialization(task)
        if table == "validations":
            return self.validation(task)
        return StepTable

    def tasks_with_key(self, table: str, key: str) -> list[str]:
        """The tasks whose ``table`` has field ``key`` (for "applies to task X" messages)."""
        return [t for t in self.plugins.tasks if key in self.of(table, t).model_fields]

    def _cached(self, table: str, task: str | None, build: Any) -> type[Table]:
        if (table, task) not in self._cache:
            self._cache[(table, task)] = build(task)
        return self._cache[(table, task)]

    def _specialization(self, task: str | None) -> type[Table]:
        bases = [t.specialization_table for t in self._tasks(task)]
        # Backends may share one sub-table (`qaic` and `qaic-bundle` both read [specializations.X.qaic]).
        options = {b.options_table(): (b.options | None,
                                       Field(None, description=f"Options of the {b.options_table()!r} backend."))
                   for b in self.plugins.backends.values() if b.options is not None}
        return _merge(f"{_title(task)}Specialization", bases, options)

    def _validation(self, task: str | None) -> type[Table]:
        return _merge(f"{_title(task)}Validation", [t.validation_table for t in self._tasks(task)], {})

    def _tasks(self, task: str | None) -> list[Any]:
        return [self.plugins.tasks.get(task)] if task else self.plugins.tasks.values()


def _title(task: str | None) -> str:
    return "".join(p.title() for p in (task or "any").replace("_", "-").split("-"))


def _merge(name: str, bases: list[type[Table]], extra: dict[str, Any]) -> type[Table]:
    """One class with the fields of every base (first definition wins) plus ``extra``.

    Over several families (a table whose model's task is unknown, or the JSON Schema's union), a field
    only some families require is optional: one family's required key must not be reported missing from
    another family's table."""
    if len(bases) == 1:
        if not extra:
            return bases[0]
        one: type[Table] = create_model(name, __base__=bases[0], **extra)
        return one
    fields: dict[str, Any] = {}
    for base in bases:
        for fname, info in base.model_fields.items():
            if fname in fields:
                continue
            required = all(fname in b.model_fields and b.model_fields[fname].is_required() for b in bases)
            if info.is_required() and not required:
                loose = copy.copy(info)
                loose.default = None
                fields[fname] = (Optional[info.annotation], loose)  # noqa: UP045
    fields.update(extra)
    # Every family's class as a base keeps each one's field validators (a bad seq_len is still caught).
    cls: type[Table] = create_model(name, __base__=tuple(bases), **fields)
    return cls


def json_schema(plugins: Plugins) -> dict[str, Any]:
    """The JSON Schema of a manifest file, complete with every family's and backend's fields."""
    classes = TableClasses(plugins)
    models = tuple(t.model_table for t in plugins.tasks.values())
    model_union: Any = Annotated[Union[models], Field(discriminator="task")] if len(models) > 1 else models[0]  # noqa: UP007
    spec: Any = classes.specialization(None)
    validation: Any = classes.validation(None)
    fields: dict[str, Any] = {
        "project": (ProjectTable, ...),
        "models": (dict[str, model_union], Field(default_factory=dict)),
        "specializations": (dict[str, spec], Field(default_factory=dict)),
        "validations": (dict[str, validation], Field(default_factory=dict)),
        "steps": (dict[str, StepTable], Field(default_factory=dict)),
    }
    schema_model: type[BaseModel] = create_model("Manifest", __config__=ConfigDict(extra="forbid"), **fields)
    schema = schema_model.model_json_schema()
    schema["title"] = "qeffbuild manifest"
    _allow_matrix(schema)
    return schema


MATRIX_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Matrix",
    "description": "Expand this table into the cross product of named axes; ${matrix.AXIS} in the table's name "
                   "and values is replaced by each row's value (see core/matrix.py).",
    "properties": {
        "include": {"type": "array", "items": {"type": "object"}, "description": "Rows to add (every axis named)."},
        "exclude": {"type": "array", "items": {"type": "object"}, "description": "Rows to remove (all keys match)."},
    },
    "additionalProperties": {"type": "array", "minItems": 1,
                             "items": {"type": ["string", "number", "boolean"]}, "description": "An axis."},
}


def _allow_matrix(schema: dict[str, Any]) -> None:
    """Every target table may carry ``matrix``, and any of its values may be a ``${matrix.AXIS}`` reference."""
    defs = schema.setdefault("$defs", {})
    defs["Matrix"] = MATRIX_SCHEMA
    reference = {"type": "string", "pattern": r"\$\{matrix\.[^}]+\}", "description": "A matrix axis's value."}
    for table in ("models", "specializations", "validations", "steps"):
        extra = schema["properties"][table].get("additionalProperties", {})
        for ref in [extra, *extra.get("oneOf", []), *extra.get("anyOf", [])]:
            name = ref.get("$ref", "").removeprefix("#/$defs/")
            body = defs.get(name)
            if body is None or "properties" not in body:
                continue
            body["properties"] = {k: {"anyOf": [v, reference]} for k, v in body["properties"].items()}
            body["properties"]["matrix"] = {"$ref": "#/$defs/Matrix"}
