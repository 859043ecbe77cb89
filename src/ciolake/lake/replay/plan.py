"""Replay's plan for a chunk: what to do, in one channel table, with each row it derives.

A derived row is new when no stored row has its event, and left alone when a stored row from an
earlier delivery wins. A stored row from the same delivery is read back and compared column by
column: the derived row is rewritten if it differs, as it is when the stored row is from a later
delivery or stored twice. A plan is made at one version of the table and still holds at a later
one unless what was committed since touches its events or its partitions' files.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ciolake.lake.replay.keys import KEY_COLUMNS, KeyCache, keys_of, stored_keys
from ciolake.lake.replay.reads import by_size, stored_rows
from ciolake.lake.table_files import TableFiles, true_count, true_indices

# A stored row from the same delivery (journal stream and lsn) was built from the same body, so
# its copy of the body cannot differ: it is not read back to compare (it is most of a row).
_NOT_COMPARED = frozenset({"payload"})


@dataclass
class Plan:
    """What to do with each derived row (boolean masks), and which stored files to rewrite;
    made at table ``version`` from the files ``seen`` in the partitions ``dates``."""

    new: pa.BooleanArray
    rewrite: pa.BooleanArray
    rewrite_paths: tuple[str, ...]
    version: int
    dates: pa.Array
    seen: frozenset[str]


def plan_chunk(files: TableFiles, derived: pa.Table, cache: KeyCache) -> Plan:
    """Sort the derived rows into new, to rewrite, and unchanged (the rest)."""
    count = derived.num_rows
    ids = derived.column("event_id")
    partition = files.spec.partition_by
    dates = pc.unique(derived.column(partition))
    in_dates = files.select(partitions=dates)
    seen = frozenset(files.paths[i] for i in in_dates.to_pylist())
    nothing = pa.array([False] * count, pa.bool_())
    if not len(in_dates):
        return Plan(pc.invert(nothing), nothing, (), files.version, dates, seen)
    low, high = pc.min_max(ids).values()
    candidates = files.select(partitions=dates, ranges=[("event_id", low, high)])
    stored = stored_keys(files, candidates=candidates, ids=ids, cache=cache)
    # One row per stored copy of a chunk event: which derived row, which file, which delivery.
    joined = stored.join(
        pa.table({"event_id": ids, "row": pa.array(range(count), pa.int64())}),
        "event_id",
        join_type="inner",
    )
    row = joined.column("row")
    theirs = [joined.column(c).cast(pa.int64()) for c in KEY_COLUMNS[1:]]
    ours = [derived.column(c).cast(pa.int64()).take(row) for c in KEY_COLUMNS[1:]]
    earlier, same = _compare_keys(theirs, ours)
    later = pc.and_not(pc.invert(earlier), same)
    per_row = (
        pa.table({"row": row, "earlier": earlier, "later": later})
        .group_by("row")
        .aggregate([("earlier", "any"), ("later", "any"), ("row", "count")])
    )
    flags = (
        pa.table({"row": pa.array(range(count), pa.int64())})
        .join(per_row, "row", join_type="left outer")
        .sort_by("row")
    )
    new = pc.is_null(flags.column("row_count"))
    stored_earlier = pc.fill_null(flags.column("earlier_any"), False)
    stored_later = pc.fill_null(flags.column("later_any"), False)
    copies = pc.fill_null(flags.column("row_count"), 0)
    open_rows = pc.invert(pc.or_(new, stored_earlier))
    rewrite = pc.and_(open_rows, pc.or_(stored_later, pc.greater(copies, 1)))
    # Stored from the very delivery the chunk has: equal unless the derivation changed.
    check = pc.and_not(open_rows, rewrite)
    held_in = joined.column("file").cast(pa.int64())
    if true_count(check):
        checked = pc.take(check, row)
        holding = pa.table(
            {
                "file": held_in.filter(checked),
                "position": joined.column("position").filter(checked),
            }
        )
        rewrite = pc.or_(rewrite, _changed(files, derived, check, holding))
    rewrite_files = pc.unique(held_in.filter(pc.take(rewrite, row))).to_pylist()
    rewrite_paths = tuple(files.paths[i] for i in rewrite_files)
    return Plan(
        new.combine_chunks(), rewrite.combine_chunks(), rewrite_paths, files.version, dates, seen
    )


def plan_holds(plan: Plan, files: TableFiles, derived: pa.Table, cache: KeyCache) -> bool:
    """Whether ``plan`` still holds for ``files``, which may be at a later version.

    It does if no file of its partitions has gone since (a rewrite or a compaction, which
    may have moved or changed rows), and no file added since holds a row of its events (the
    committer took a retried delivery of one, or another replay wrote one).
    """
    if plan.version == files.version:
        return True
    in_dates = files.select(partitions=plan.dates).to_pylist()
    now = {files.paths[i]: i for i in in_dates}
    if not plan.seen <= now.keys():
        return False
    added = [i for path, i in now.items() if path not in plan.seen]
    ids = derived.column("event_id").combine_chunks()
    return not any(
        pc.any(pc.is_in(keys.column("event_id"), value_set=ids)).as_py()
        for keys in keys_of(files, added, cache).values()
    )


def _changed(
    files: TableFiles, derived: pa.Table, check: pa.BooleanArray, holding: pa.Table
) -> pa.BooleanArray:
    """Which ``check`` rows differ from their stored row (read back from ``holding``: the
    file and the position in it of each)."""
    changed = [False] * derived.num_rows
    to_check = true_indices(check)
    wanted = derived.column("event_id").take(to_check)
    compared = [name for name in files.spec.schema.names if name not in _NOT_COMPARED]
    positions: dict[int, list[int]] = {}
    for index, position in zip(
        holding.column("file").to_pylist(), holding.column("position").to_pylist(), strict=True
    ):
        positions.setdefault(index, []).append(position)
    for group in by_size(files, pa.array(sorted(positions), pa.int64())):
        stored = stored_rows(files, group, wanted, positions, compared)
        _mark_changed(stored, derived, to_check, changed)
    return pa.array(changed, pa.bool_())


def _mark_changed(
    stored: pa.Table, derived: pa.Table, to_check: pa.Int64Array, changed: list[bool]
) -> None:
    """Set ``changed`` for the ``to_check`` rows of ``derived`` that differ from ``stored``."""
    stored_rows = pa.array(range(stored.num_rows), pa.int64())
    pairs = (
        pa.table({"event_id": stored.column("event_id"), "stored_row": stored_rows})
        .join(
            pa.table({"event_id": derived.column("event_id").take(to_check), "row": to_check}),
            "event_id",
            join_type="inner",
        )
        .sort_by("stored_row")
    )
    if not pairs.num_rows:
        return
    order, picked = pairs.column("row"), pairs.column("stored_row")
    # Text columns are most of a stored row's size, and copying them in derived order cost more
    # than comparing them: flat columns are compared in stored order, against the derived rows
    # taken into that order (null where a stored row is not one to check, e.g. another chunk's
    # row in the same file); nested columns, which are small, are taken in pair order.
    whole = pairs.num_rows == stored.num_rows
    index = order
    if not whole:
        index = (
            pa.table({"stored_row": pa.array(range(stored.num_rows), pa.int64())})
            .join(pairs, "stored_row", join_type="left outer")
            .sort_by("stored_row")
            .column("row")
        )
    for column in derived.schema:
        if column.name in _NOT_COMPARED:
            continue
        theirs = stored.column(column.name)
        if theirs.type != column.type:
            theirs = theirs.cast(column.type)
        rows_of = index
        if pa.types.is_nested(column.type) and not whole:
            theirs, rows_of = theirs.take(picked), order
        ours = derived.column(column.name).take(rows_of)
        if theirs.equals(ours):
            continue
        found = _differing(theirs, ours)
        if rows_of is index and not whole:
            found = pc.and_(found, pc.is_valid(index))
        for row in rows_of.filter(found).to_pylist():
            changed[row] = True


def _differing(
    a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray
) -> pa.BooleanArray | pa.ChunkedArray:
    """Per row, whether ``a`` and ``b`` differ (null equals null)."""
    if not pa.types.is_nested(a.type):
        unequal = pc.fill_null(pc.not_equal(a, b), False)
        return pc.or_(unequal, pc.xor(pc.is_null(a), pc.is_null(b)))
    # Lists, maps and structs have no comparison kernel: halve until the rows are found.
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if isinstance(b, pa.ChunkedArray):
        b = b.combine_chunks()
    out = [False] * len(a)
    _bisect(a, b, 0, len(a), out)
    return pa.array(out, pa.bool_())


def _bisect(a: pa.Array, b: pa.Array, start: int, stop: int, out: list[bool]) -> None:
    size = stop - start
    if a.slice(start, size).equals(b.slice(start, size)):
        return
    if size == 1:
        out[start] = True
        return
    middle = start + size // 2
    _bisect(a, b, start, middle, out)
    _bisect(a, b, middle, stop, out)


def _compare_keys(
    theirs: list[pa.Array], ours: list[pa.Array]
) -> tuple[pa.BooleanArray, pa.BooleanArray]:
    """Elementwise (stored key < derived key, stored key == derived key), lexicographically."""
    earlier = pa.array([False] * len(theirs[0]), pa.bool_())
    same = pa.array([True] * len(theirs[0]), pa.bool_())
    for stored, chunk in zip(theirs, ours, strict=True):
        earlier = pc.or_(earlier, pc.and_(same, pc.less(stored, chunk)))
        same = pc.and_(same, pc.equal(stored, chunk))
    return earlier, same


__all__ = ["Plan", "plan_chunk", "plan_holds"]
