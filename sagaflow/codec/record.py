"""The whole record as one JSON-able dict: export, tests, an operator's view. A store
writes the pieces (:mod:`.steps`, :mod:`.history`, :mod:`.data`...) in columns instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import CorruptRecord
from ..records import SagaRecord, SagaStatus
from .data import SagaData
from .diagnose import describe_failure
from .faults import Errors
from .history import History
from .paths import type_path
from .steps import dump_steps, step_from_form
from .text import dumps, loads

__all__ = ["Records"]


class Records:
    """Whole records to their JSON form and back; one per codec."""

    def __init__(self, data: SagaData, errors: Errors, history: History) -> None:
        self.data = data
        self.errors = errors
        self.history = history
        self.values = data.values

    def encode(self, record: SagaRecord) -> dict[str, Any]:
        """The whole record as a JSON-able dict (``data`` by its class's field types)."""
        history = []
        for event in record.history:
            tag, at, step, attempt, error, detail = self.history.row(event)
            item: dict[str, Any] = {"type": tag, "at": at}
            if step is not None:
                item["step"] = step
            if attempt:
                item["attempt"] = attempt
            if error is not None:
                item["error"] = error
            if event.saga_id != record.saga_id:
                item["saga_id"] = event.saga_id
            if event.saga_name != record.saga_name:
                item["saga_name"] = event.saga_name
            if detail is not None:
                item["detail"] = loads(detail)
            history.append(item)
        return {
            "saga_id": record.saga_id,
            "saga_name": record.saga_name,
            "fingerprint": record.fingerprint,
            "data_type": type_path(type(record.data)),
            "status": record.status.value,
            "state": record.state,
            "cursor": record.cursor,
            "undo": list(record.undo),
            "wake_at": record.wake_at,
            "deadline_at": record.deadline_at,
            "compensation_deadline_at": record.compensation_deadline_at,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "finished_at": record.finished_at,
            "version": record.version,
            "error": self.errors.encode(record.error),
            "failures": dict(record.failures),
            "resolution": record.resolution,
            "steps": loads(dump_steps(record.steps)),
            "data": loads(self.data.dump(record)),
            "events": [self.values.encode_value(e) for e in record.events],
            "history": history,
            "path": [list(edge) for edge in record.path],
        }

    def decode(self, data: Mapping[str, Any], cls: type | None) -> SagaRecord:
        """The inverse of :meth:`encode`; ``cls`` is the saga class (``None`` keeps
        ``data`` as its JSON form). Raises :class:`CorruptRecord`."""
        saga_id = str(data.get("saga_id", "?"))
        try:
            saga_name = data["saga_name"]
            history = []
            for item in data["history"]:
                detail = item.get("detail")
                row = (
                    item["type"],
                    item["at"],
                    item.get("step"),
                    item.get("attempt", 0),
                    item.get("error"),
                    None if detail is None else dumps(detail),
                )
                history.append(self.history.from_row(
                    row, item.get("saga_id", saga_id), item.get("saga_name", saga_name)
                ))
            return SagaRecord(
                saga_id=data["saga_id"],
                saga_name=saga_name,
                fingerprint=data["fingerprint"],
                data=data["data"] if cls is None
                else self.values.converter.structure(data["data"], cls),
                steps=[step_from_form(s) for s in data["steps"]],
                created_at=data["created_at"],
                status=SagaStatus(data["status"]),
                state=data["state"],
                cursor=data["cursor"],
                undo=list(data["undo"]),
                wake_at=data["wake_at"],
                deadline_at=data["deadline_at"],
                compensation_deadline_at=data["compensation_deadline_at"],
                updated_at=data["updated_at"],
                finished_at=data["finished_at"],
                error=self.errors.decode(data["error"]),
                failures=dict(data["failures"]),
                events=[self.values.decode_value(e) for e in data["events"]],
                history=history,
                version=data["version"],
                resolution=data.get("resolution"),
                path=[(a, b, c) for a, b, c in data.get("path", ())],
            )
        except Exception as exc:  # report any malformation as one error naming the saga
            raise CorruptRecord(saga_id, describe_failure(exc)) from exc
