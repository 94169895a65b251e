"""``counterparty migrate-db``: copy every row from one database to another (SQLite -> PostgreSQL).

Both databases are migrated to the newest schema first, so the copy is table for table with the
same columns. Tables are copied parent-first (``metadata.sorted_tables``) so foreign keys hold at
every step, in batches, inside one transaction on the target: a failure leaves the target as
empty as it was. On PostgreSQL the id sequences are then moved past the copied ids, or the next
insert would collide with a copied row.

The bot must be stopped while this runs; rows written meanwhile would not be copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select, text

from bot.storage.db import migrate
from bot.storage.schema import metadata

BATCH_ROWS = 1000


class TransferError(Exception):
    """The copy cannot be made; the message says why and nothing was written."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    rows: int


def _count(connection: Connection, table_name: str) -> int:
    table = metadata.tables[table_name]
    return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _fix_sequences(connection: Connection) -> None:
    for table in metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or pk[0].autoincrement is not True:
            continue
        column = pk[0].name
        sequence = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": column},
        ).scalar_one()
        if sequence is None:
            continue
        # setval(seq, max, true) makes the next value max+1; an empty table restarts at 1.
        # Table and column names come from our own schema, never from input.
        highest = f'(SELECT MAX("{column}") FROM "{table.name}")'  # noqa: S608
        connection.execute(
            text(f"SELECT setval(:sequence, COALESCE({highest}, 1), {highest} IS NOT NULL)"),
            {"sequence": sequence},
        )


def copy_database(
    source: Engine,
    target: Engine,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> list[TableCopy]:
    """Copy every table of ``source`` into the empty database ``target``; return rows per table.

    Raises :class:`TransferError` when the target already holds data or the copy's row counts do
    not match the source (in which case the target transaction is rolled back).
    """
    if source.url == target.url:
        raise TransferError("the source and the target are the same database")
    migrate(source)
    migrate(target)
    with target.connect() as probe:
        filled = [t.name for t in metadata.sorted_tables if _count(probe, t.name)]
    if filled:
        raise TransferError(
            "the target database already holds data (tables: " + ", ".join(filled) + "); "
            "migrate-db only copies into an empty database"
        )
    copied: list[TableCopy] = []
    with source.connect() as reader, target.begin() as writer:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns)
            result = reader.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
                select(table).order_by(*order)
            )
            rows = 0
            for batch in result.partitions(BATCH_ROWS):
                writer.execute(table.insert(), [dict(row._mapping) for row in batch])
                rows += len(batch)
            expected = _count(reader, table.name)
            if rows != expected or _count(writer, table.name) != expected:
                raise TransferError(
                    f"table {table.name}: copied {rows} rows but the source has {expected}; "
                    "was the bot still running? nothing was written"
                )
            copied.append(TableCopy(table.name, rows))
            if progress is not None:
                progress(table.name, rows)
        if writer.dialect.name == "postgresql":
            _fix_sequences(writer)
    return copied
