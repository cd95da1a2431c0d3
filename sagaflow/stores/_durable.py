"""What the durable stores (SQLite, PostgreSQL) share: which class a stored saga's data
is an instance of, the saga row's column values in one order, and the run's path (its
recent edges in the row, the older ones in an append-only table, as the events)."""

from __future__ import annotations

import json
from typing import Any

from ..codec import Codec, import_path, type_path
from ..errors import CodecError, CorruptRecord, StoreError, UnknownSagaClass
from ..records import SagaRecord

__all__ = ["INLINE", "DurableRows", "edge_text", "path_of", "spilled"]

#: Events (and path edges) kept in the saga's row; every INLINE, they move to the
#: append-only tables.
INLINE = 32


def spilled(n: int) -> int:
    """How many of ``n`` events live in the append-only tables (the rest are inline)."""
    return n - n % INLINE


def edge_text(edge: tuple[str, str, str]) -> str:
    """One path edge as JSON: ``["source","trigger","destination"]``. State and trigger
    names are identifiers (nothing to escape); anything else goes through json."""
    a, b, c = edge
    if a.isidentifier() and b.isidentifier() and c.isidentifier():
        return f'["{a}","{b}","{c}"]'
    return json.dumps([a, b, c], separators=(",", ":"), ensure_ascii=False)


def path_of(
    saga_id: str, spilled_edges: Any, inline: Any, count: Any
) -> list[tuple[str, str, str]]:
    """The run's path from its spilled edges and its row's inline tail (parsed JSON),
    checking that they add up to the row's count."""
    if (
        not isinstance(count, int)
        or len(spilled_edges) != spilled(count)
        or not isinstance(inline, list)
        or len(inline) != count - spilled(count)
    ):
        raise CorruptRecord(
            saga_id,
            f"its row counts {count!r} path edges but {len(spilled_edges)} + "
            f"{len(inline) if isinstance(inline, list) else repr(inline)} are stored",
        )
    path = [(a, b, c) for a, b, c in spilled_edges]
    path.extend((a, b, c) for a, b, c in inline)
    return path


class DurableRows:
    """Mixed into a durable store, which sets ``codec``, ``_classes`` and ``_data_types``.

    ``_class_for`` takes the store's undecoded saga (``saga_id``, ``saga_name``,
    ``fingerprint``, ``data_type``).
    """

    codec: Codec
    _classes: dict[str, dict[str, type]]
    _data_types: dict[type, str]

    def register(self, *saga_classes: type) -> None:
        """Tell the store which classes stored sagas are instances of, so it can load
        them (``create`` registers the classes it sees; recovery registers the rest)."""
        from ..definition import spec_of

        for cls in saga_classes:
            spec = spec_of(cls)
            self._classes.setdefault(spec.name, {})[spec.fingerprint] = spec.cls

    def _learn(self, record: SagaRecord) -> None:
        known = self._classes.setdefault(record.saga_name, {})
        cls = type(record.data)
        if known.get(record.fingerprint) is not cls:
            known.pop(record.fingerprint, None)  # re-insert: the newest class is last
            known[record.fingerprint] = cls

    def _class_for(self, stored: Any) -> type:
        known = self._classes.get(stored.saga_name)
        if known:
            exact = known.get(stored.fingerprint)
            return exact if exact is not None else next(reversed(known.values()))
        from ..definition import is_saga, spec_of

        try:
            found = import_path(stored.data_type)
        except CodecError as exc:
            raise UnknownSagaClass(
                stored.saga_id, stored.saga_name, stored.data_type, str(exc)
            ) from exc
        if not is_saga(found) or spec_of(found).name != stored.saga_name:
            raise UnknownSagaClass(
                stored.saga_id, stored.saga_name, stored.data_type,
                "that name is not a saga class of this name",
            )
        self.register(found)
        return found  # type: ignore[no-any-return]

    def _data_type(self, cls: type) -> str:
        path = self._data_types.get(cls)
        if path is None:
            path = self._data_types[cls] = type_path(cls)
        return path

    def _row(
        self,
        record: SagaRecord,
        version: int,
        verify: bool,
        steps: str,
        history: str,
        events: str,
        path: str,
    ) -> tuple[Any, ...]:
        codec = self.codec
        dumps = codec.dumps_json
        error = record.error
        return (
            record.saga_id,
            record.saga_name,
            record.fingerprint,
            self._data_type(type(record.data)),
            record.status.value,
            record.state,
            version,
            record.cursor,
            dumps(record.undo) if record.undo else "[]",
            record.created_at,
            record.updated_at,
            record.finished_at,
            record.wake_at,
            record.deadline_at,
            record.compensation_deadline_at,
            steps,
            codec.dump_data(record, verify=verify),
            None if error is None else dumps(codec.encode_error(error)),
            dumps(record.failures) if record.failures else None,
            record.resolution,
            history,
            len(record.history),
            events,
            len(record.events),
            path,
            len(record.path),
        )

    def _path(
        self, record: SagaRecord, stored: int, inline: list[str]
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Rows to append to sagaflow_path and the new inline tail (edges as JSON),
        given that the store has ``stored`` edges of the path (the last ones in
        ``inline``): only the new edges are encoded."""
        path = record.path
        n = len(path)
        if n < stored:
            raise StoreError(
                f"saga {record.saga_id!r}: its path shrank since the last save; it is "
                "append-only"
            )
        for i in range(stored, n):
            inline.append(edge_text(path[i]))
        cut = spilled(n) - spilled(stored)
        if not cut:
            return [], inline
        sid = record.saga_id
        first = spilled(stored)
        return [(sid, first + k, *path[first + k]) for k in range(cut)], inline[cut:]
