"""Precompiled SQL for the audit writer's hot path.

An ORM ``create`` or ``update`` spends most of its time compiling SQL, not running it:
about 0.6 ms against 0.06 ms for the statement itself. The audit writer runs a few
statements around every tool call, so it compiles each shape once per database
connection alias, keeps the SQL string, and on each call only turns values into
parameters with each field's own ``get_db_prep_save`` (the step the ORM would take).

INSERT is compiled by Django's own compiler, which also emits the backend's RETURNING
clause. UPDATE and SELECT are a single table's ``col = %s`` lists, written out here with
the backend's quoting: Django's update compiler renders a None value as a literal NULL,
which would bake one call's value into the cached SQL. Rows that come back go through
the same converters the ORM applies, so callers see the Python values a queryset gives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models.sql import InsertQuery

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


Preparer = Callable[[Any, BaseDatabaseWrapper], Any]


# Stock fields that store a value of exactly this type as it is (their preparation is int(),
# bool() or float() of it), on every backend.
_PLAIN: dict[type[models.Field[Any, Any]], type] = {
    models.CharField: str,
    models.TextField: str,
    models.IntegerField: int,
    models.PositiveIntegerField: int,
    models.BigIntegerField: int,
    models.BooleanField: bool,
    models.FloatField: float,
}


def _preparer(field: models.Field[Any, Any]) -> Preparer:
    """The field's ``get_db_prep_save``, short-cut where Django's own fields pass the value through.

    Every stock field stores None as NULL, and a stock text, integer, boolean or float field
    stores a value of its own Python type as it is; four layers of Field methods to learn that
    cost more, over the thirty columns of an audit row, than binding them. Anything else goes
    through the field.
    """
    prepare = field.get_db_prep_save
    plain = _PLAIN.get(type(field))
    if plain is not None:
        return lambda value, connection: (
            value if value is None or type(value) is plain else prepare(value, connection)
        )
    if type(field).__module__.startswith("django.db.models."):
        return lambda value, connection: None if value is None else prepare(value, connection)
    return prepare


class _Compiled:
    """One statement compiled for one database: its SQL, prepared constants, returned-column converters."""

    def __init__(
        self,
        sql: str,
        constants: list[Any],
        returning: Sequence[models.Field[Any, Any]],
        connection: BaseDatabaseWrapper,
    ):
        self.sql = sql
        self.constants = constants
        self.returning = [_converters(field, connection) for field in returning]

    def row(self, raw: Sequence[Any], connection: BaseDatabaseWrapper) -> dict[str, Any]:
        """A returned row as the ORM would give it, keyed by attribute name (``host_id``, not ``host``)."""
        row: dict[str, Any] = {}
        for (name, col, converters), value in zip(self.returning, raw, strict=True):
            for convert in converters:
                value = convert(value, col, connection)
            row[name] = value
        return row


def _converters(
    field: models.Field[Any, Any], connection: BaseDatabaseWrapper
) -> tuple[str, Any, list[Converter]]:
    """The attribute name, column expression and converters the ORM would apply to this column."""
    col = field.get_col(field.model._meta.db_table)
    converters: list[Converter] = [
        *connection.ops.get_db_converters(col),
        *col.get_db_converters(connection),
    ]
    return field.attname, col, converters


def _column(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    """The concrete field stored in column ``name`` (its name or attname: ``host`` or ``host_id``)."""
    for field in model._meta.concrete_fields:
        if name in (field.name, field.attname):
            return field
    raise ValueError(f"{model.__name__} has no column {name!r}")


class Statement:
    """A statement on one model with a fixed list of parameter fields, compiled lazily per alias.

    ``constants`` (INSERT only) are columns whose value is the same on every call: they
    are prepared once, with the SQL, and bound after the parameters.
    """

    def __init__(
        self,
        model: type[models.Model],
        params: Sequence[str],
        returning: Sequence[str] = (),
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.params = [_column(model, name) for name in params]
        self.returning = [_column(model, name) for name in returning]
        self.constants = [(_column(model, name), value) for name, value in (constants or {}).items()]
        self._preparers = [_preparer(field) for field in self.params]
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def compile(self, connection: BaseDatabaseWrapper) -> str:
        raise NotImplementedError

    def _for(self, connection: BaseDatabaseWrapper) -> _Compiled:
        compiled = self._compiled.get(connection.alias)
        if compiled is None:
            with self._lock:
                constants = [field.get_db_prep_save(value, connection) for field, value in self.constants]
                compiled = _Compiled(self.compile(connection), constants, self.returning, connection)
                self._compiled[connection.alias] = compiled
        return compiled

    def execute(self, cursor: CursorWrapper, values: Sequence[Any]) -> dict[str, Any] | None:
        """Run with ``values`` (one per parameter field, in order); return the first returned row, if any.

        The row is keyed by attribute name (``host_id``, not ``host``).
        """
        connection = cursor.db
        compiled = self._for(connection)
        params = [prepare(value, connection) for prepare, value in zip(self._preparers, values, strict=True)]
        cursor.execute(compiled.sql, params + compiled.constants)
        if not compiled.returning:
            return None
        raw = cursor.fetchone()
        return None if raw is None else compiled.row(raw, connection)

    def execute_many(self, cursor: CursorWrapper, rows: Sequence[Sequence[Any]]) -> None:
        """Run once per row of ``rows`` in one ``executemany`` (a statement without RETURNING)."""
        connection = cursor.db
        compiled = self._for(connection)
        assert not compiled.returning, "executemany returns no rows"
        cursor.executemany(
            compiled.sql,
            [
                [prepare(value, connection) for prepare, value in zip(self._preparers, values, strict=True)]
                + compiled.constants
                for values in rows
            ],
        )

    def _returning_sql(self, connection: BaseDatabaseWrapper) -> str:
        if not self.returning:
            return ""
        qn = connection.ops.quote_name
        return " RETURNING " + ", ".join(qn(field.column) for field in self.returning)


class Insert(Statement):
    """``INSERT`` of one row with the parameter fields; returns the ``returning`` fields (the id)."""

    def compile(self, connection: BaseDatabaseWrapper) -> str:
        if self.returning and not connection.features.can_return_columns_from_insert:
            raise RuntimeError(f"{connection.vendor} cannot return columns from INSERT")
        fields = [*self.params, *(field for field, _ in self.constants)]
        query = InsertQuery(self.model)
        # Values are placeholders here: the compiler emits "%s" for each plain value.
        query.insert_values(fields, [self.model()])
        compiler = query.get_compiler(connection=connection)
        compiler.returning_fields = self.returning
        [(sql, params)] = compiler.as_sql()
        assert len(params) == len(fields), "every inserted field must be one plain placeholder"
        return str(sql)


class MultiInsert:
    """``INSERT`` of many rows in one statement, built from an ``Insert``'s SQL; returns their first
    returned column (the ids), in the order given, as Django's ``bulk_create`` relies on too."""

    def __init__(self, insert: Insert) -> None:
        self.insert = insert
        self._sql: dict[tuple[str, int], str] = {}  # (alias, rows): a batch's chunks repeat sizes

    def sql(self, connection: BaseDatabaseWrapper, rows: int) -> str:
        sql = self._sql.get((connection.alias, rows))
        if sql is None:
            head, _, rest = self.insert._for(connection).sql.partition(" VALUES ")
            group, _, tail = rest.partition(")")
            sql = self._sql[connection.alias, rows] = f"{head} VALUES {', '.join([group + ')'] * rows)}{tail}"
        return sql

    def execute(self, cursor: CursorWrapper, rows: Sequence[Sequence[Any]]) -> list[Any]:
        connection = cursor.db
        compiled = self.insert._for(connection)
        sql = self.sql(connection, len(rows))
        params: list[Any] = []
        for values in rows:
            params += [
                prepare(v, connection) for prepare, v in zip(self.insert._preparers, values, strict=True)
            ]
            params += compiled.constants
        cursor.execute(sql, params)
        (_name, col, converters) = compiled.returning[0]
        found = []
        for (value,) in cursor.fetchall():
            for convert in converters:
                value = convert(value, col, connection)
            found.append(value)
        return found


class Update(Statement):
    """``UPDATE table SET a = %s, ... WHERE x = %s AND ...`` with an optional RETURNING clause.

    Parameters are the ``set`` fields then the ``where`` fields.
    """

    def __init__(
        self,
        model: type[models.Model],
        set_fields: Sequence[str],
        where: Sequence[str],
        returning: Sequence[str] = (),
    ) -> None:
        super().__init__(model, [*set_fields, *where], returning)
        self.set_count = len(set_fields)

    def compile(self, connection: BaseDatabaseWrapper) -> str:
        qn = connection.ops.quote_name
        assignments = ", ".join(f"{qn(field.column)} = %s" for field in self.params[: self.set_count])
        condition = " AND ".join(f"{qn(field.column)} = %s" for field in self.params[self.set_count :])
        # Only quoted names from the model's own metadata go into the text; values are parameters.
        table = qn(self.model._meta.db_table)
        returning = self._returning_sql(connection)
        return f"UPDATE {table} SET {assignments} WHERE {condition}{returning}"  # noqa: S608


class UpdateMany:
    """An ``Update`` of many rows, each with its own values, in one statement; returns every row it changed.

    ``UPDATE table SET a = v.column1, ... FROM (VALUES (...), (...)) AS v WHERE table.x = v.columnN
    AND ... RETURNING ...`` (SQLite 3.33 and later, PostgreSQL). A row's values are the ``Update``'s
    parameters in its order: the set fields, then the where fields. ``VALUES`` names its columns
    ``column1``, ``column2``, ... on both backends. On PostgreSQL each value is cast to its column's
    type: a column of NULLs in a VALUES list would otherwise be text; SQLite stores values by the
    target column's affinity and needs no cast (a CAST there would convert text dates to numbers).
    The rows come back in no particular order: callers match them by a returned key.
    """

    def __init__(self, update: Update) -> None:
        self.update = update
        self._sql: dict[tuple[str, int], str] = {}  # (alias, rows): a batch's chunks repeat sizes

    def sql(self, connection: BaseDatabaseWrapper, rows: int) -> str:
        sql = self._sql.get((connection.alias, rows))
        if sql is None:
            sql = self._sql[connection.alias, rows] = self._build(connection, rows)
        return sql

    def _build(self, connection: BaseDatabaseWrapper, rows: int) -> str:
        qn = connection.ops.quote_name
        update = self.update
        table = qn(update.model._meta.db_table)
        cast = connection.vendor == "postgresql"
        placeholders = ", ".join(
            f"CAST(%s AS {field.db_type(connection)})" if cast else "%s" for field in update.params
        )
        values = ", ".join([f"({placeholders})"] * rows)
        set_fields, where_fields = update.params[: update.set_count], update.params[update.set_count :]
        assignments = ", ".join(f"{qn(field.column)} = v.column{i}" for i, field in enumerate(set_fields, 1))
        condition = " AND ".join(
            f"{table}.{qn(field.column)} = v.column{i}"
            for i, field in enumerate(where_fields, update.set_count + 1)
        )
        returning = update._returning_sql(connection)
        # Only quoted names from the model's own metadata go into the text; values are parameters.
        return f"UPDATE {table} SET {assignments} FROM (VALUES {values}) AS v WHERE {condition}{returning}"  # noqa: S608

    def execute(self, cursor: CursorWrapper, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """Run with one values list per row; the rows it changed, keyed by attribute name, in any order."""
        if not rows:
            return []
        connection = cursor.db
        compiled = self.update._for(connection)
        preparers = self.update._preparers
        params: list[Any] = []
        for values in rows:
            params += [prepare(value, connection) for prepare, value in zip(preparers, values, strict=True)]
        cursor.execute(self.sql(connection, len(rows)), params)
        if not compiled.returning:
            return []
        return [compiled.row(raw, connection) for raw in cursor.fetchall()]


class SelectForUpdate(Statement):
    """``SELECT returning FROM table WHERE x = %s`` that locks the row where the backend can.

    SQLite has no row locks; there the writer's IMMEDIATE transaction already holds the
    database's write lock, which serialises the same way.
    """

    def compile(self, connection: BaseDatabaseWrapper) -> str:
        qn = connection.ops.quote_name
        columns = ", ".join(qn(field.column) for field in self.returning)
        condition = " AND ".join(f"{qn(field.column)} = %s" for field in self.params)
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        table = qn(self.model._meta.db_table)
        return f"SELECT {columns} FROM {table} WHERE {condition}{lock}"  # noqa: S608
