"""Type names that outlive the process: a saga run from a script, retried and resolved from
another process; what cannot be found again is refused at the first save; what this
process cannot import still reads, and saves back unchanged."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from store_sagas import Order, record_of

from sagaflow import SagaStatus
from sagaflow.codec import Codec, CodecError, StoredValue, describe_failure, type_path
from sagaflow.stores.sqlite import SQLiteStore

SCRIPT = '''\
"""A user's script: a saga, its domain event, run with `python shop.py DB`."""
import os
import sys

import attrs

from sagaflow import Orchestrator, Retry, saga, step


@attrs.frozen
class Paid:
    order: str
    cents: int


@saga(name="script-order")
class ScriptOrder:
    order: str = "o-1"

    @step(pivot=True)
    def pay(self, ctx):
        ctx.emit(Paid(self.order, 995))

    @step(retriable=True, retry=Retry(attempts=1))
    def ship(self, ctx):
        if os.environ.get("CARRIER") != "up":
            raise ConnectionError("carrier down")


if __name__ == "__main__":
    result = Orchestrator(store=f"sqlite:///{sys.argv[1]}").run(ScriptOrder(), "s-1")
    print(result.status.value)
    if os.environ.get("SHOW_ERROR"):
        print(result.error)
'''

#: Retry or resolve the script's saga from another process (the script's folder is the
#: current directory, as for `sagaflow sagas retry --import shop`).
OPERATOR = '''\
import sys
from sagaflow import Orchestrator
import shop

orchestrator = Orchestrator(store=f"sqlite:///{sys.argv[1]}", sagas=[shop.ScriptOrder])
if sys.argv[2] == "retry":
    result = orchestrator.retry("s-1", note="carrier is back")
else:
    result = orchestrator.resolve("s-1", note="shipped by hand")
print(result.status.value, [type(e).__qualname__ + ":" + type(e).__module__
                            for e in result.events])
'''


def run(args: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path]:
    """A script's folder, and its database holding a FAILED saga the script ran."""
    (tmp_path / "shop.py").write_text(SCRIPT)
    (tmp_path / "operator.py").write_text(OPERATOR)
    db = tmp_path / "shop.db"
    assert run(["shop.py", str(db)], tmp_path) == "FAILED"
    return tmp_path, db


def stored_events(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT events FROM sagaflow_sagas").fetchone()
    return str(text)


def test_a_script_saga_is_retried_from_another_process(shop: tuple[Path, Path]) -> None:
    folder, db = shop
    events = json.loads(stored_events(db))
    assert events[0]["$type"] == "shop:Paid"  # the name another process imports it by
    with sqlite3.connect(db) as conn:
        (data_type,) = conn.execute("SELECT data_type FROM sagaflow_sagas").fetchone()
    assert data_type == "shop:ScriptOrder"
    out = run(["operator.py", str(db), "retry"], folder, CARRIER="up")
    assert out == "COMPLETED ['Paid:shop']"


def test_a_script_saga_is_resolved_from_another_process(shop: tuple[Path, Path]) -> None:
    folder, db = shop
    assert run(["operator.py", str(db), "resolve"], folder) == "FAILED ['Paid:shop']"


def test_a_record_0_1_wrote_from_a_script_is_read_resolved_and_saved_unchanged(
    shop: tuple[Path, Path],
) -> None:
    folder, db = shop
    # sagaflow 0.1 named a script's classes "__main__:...": no other process has them.
    old = stored_events(db).replace('"shop:Paid"', '"__main__:Paid"')
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sagaflow_sagas SET events = ?", (old,))
    assert run(["operator.py", str(db), "resolve"], folder) == (
        "FAILED ['StoredValue:sagaflow.codec.values']"
    )
    assert stored_events(db) == old  # saved again, byte for byte

    # A process that registers the class reads the old name as the class.
    sys.path.insert(0, str(folder))
    try:
        import shop as module  # the script's module, for this test only

        codec = Codec()
        codec.register(module.Paid)
        with SQLiteStore(db, codec=codec) as store:
            store.register(module.ScriptOrder)
            assert store.load("s-1").events == [module.Paid("o-1", 995)]
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("shop", None)


def test_a_script_run_with_dash_m_is_named_by_its_module(tmp_path: Path) -> None:
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(textwrap.dedent('''
        import attrs
        from sagaflow.codec import default_codec, type_path
        @attrs.frozen
        class Placed:
            n: int
        print(type_path(Placed), default_codec.encode_value(Placed(1))["$type"])
    '''))
    assert run(["-m", "app.main"], tmp_path) == "app.main:Placed app.main:Placed"
    assert run(["app/main.py"], tmp_path) == "main:Placed main:Placed"


def test_a_script_with_no_module_name_is_refused_at_the_first_save(tmp_path: Path) -> None:
    (tmp_path / "my-shop.py").write_text(SCRIPT)  # a dash: no module has this name
    # The step took effect, so the saga ends for an operator, its error saying why.
    out = run(["my-shop.py", str(tmp_path / "x.db")], tmp_path, SHOW_ERROR="1")
    assert out.startswith("FAILED\n")
    assert "Paid cannot be stored by name" in out and "register(Paid, name=" in out


def test_a_class_defined_in_a_function_is_refused_at_the_first_save(tmp_path: Path) -> None:
    @attrs.frozen
    class Local:
        n: int

    with SQLiteStore(tmp_path / "x.db") as store:
        record = record_of(Order(), "l-1")
        store.create(record)
        record.events.append(Local(1))
        with pytest.raises(CodecError, match=r"Local cannot be stored by name: it is defined "
                                             r"inside a function.*register\(Local, name="):
            store.save(record)
        assert store.load("l-1").version == 0

        # Named, it is stored under that name and found by it.
        codec = Codec()
        codec.register(Local, name="tests.local:Local")
        with SQLiteStore(tmp_path / "x.db", codec=codec) as named:
            named.save(record)
            assert json.loads(stored_events(tmp_path / "x.db"))[0]["$type"] == "tests.local:Local"
            assert named.load("l-1").events == [Local(1)]


def test_a_value_whose_class_is_gone_saves_back_as_it_was() -> None:
    codec = Codec()
    text = '{"$type":"gone.module:Shipped","value":{"order":"o-1","at":1e+16,"note":"é"}}'
    event = codec.load_event(text)
    assert isinstance(event, StoredValue) and event.type == "gone.module:Shipped"
    assert "gone.module:Shipped" in str(event)
    assert repr(event) == (
        "StoredValue('gone.module:Shipped', value={'order': 'o-1', 'at': 1e+16, 'note': 'é'})"
    )
    record = record_of(Order(), "g-1")
    assert json.loads(codec.dump_event(event, record, 0)) == json.loads(text)
    again = codec.dump_event(event, record, 0)
    assert codec.dump_event(codec.load_event(again), record, 0) == again  # byte for byte
    # Inside saga data, a class that is gone is an error, not a stand-in.
    with pytest.raises(Exception) as caught:
        codec.load_data('{"anything":{"$type":"gone.module:X","value":1}}', Order)
    assert "cannot import 'gone.module:X'" in describe_failure(caught.value)


def test_type_paths_of_importable_classes_are_unchanged() -> None:
    assert type_path(Order) == "store_sagas:Order"
    assert type_path(SagaStatus) == "sagaflow.records:SagaStatus"
