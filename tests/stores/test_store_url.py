"""open_store: stores from URLs, store objects passed through, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.stores.url import open_store


def test_memory_url_gives_a_fresh_memory_store() -> None:
    a, b = open_store("memory://"), open_store("MEMORY://")
    assert isinstance(a, MemoryStore) and isinstance(b, MemoryStore) and a is not b


def test_store_objects_pass_through() -> None:
    store = MemoryStore()
    assert open_store(store) is store


def test_sqlite_urls_relative_absolute_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite:///sagas.db")
    assert isinstance(rel, SQLiteStore)
    assert rel.path == "sagas.db" and rel.synchronous == "FULL"
    rel.close()
    assert (tmp_path / "sagas.db").exists()
    absolute = tmp_path / "abs dir" / "s.db"
    absolute.parent.mkdir()
    store = open_store(f"sqlite:///{absolute.as_posix().replace(' ', '%20')}?synchronous=normal")
    assert isinstance(store, SQLiteStore)
    assert store.path == str(absolute) and store.synchronous == "NORMAL"
    store.close()
    assert absolute.exists()
    monkeypatch.setenv("HOME", str(tmp_path))
    home = open_store("sqlite:///~/home.db?busy_timeout=0.5")
    assert isinstance(home, SQLiteStore) and home.path == str(tmp_path / "home.db")
    home.close()


def test_sqlite_in_memory_urls() -> None:
    for url in ("sqlite:///:memory:", "sqlite://"):
        store = open_store(url)
        assert isinstance(store, SQLiteStore) and store.path == ":memory:"
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "unknown store scheme 'redis://'; supported: memory://, sqlite:///"),
        ("sagas.db", "write 'sqlite:///sagas.db'"),
        ("sqlite://host/sagas.db", "a SQLite URL has no host"),
        ("sqlite:///s.db?color=blue", "unknown SQLite option 'color'"),
        ("sqlite:///s.db?busy_timeout=soon", "busy_timeout='soon' is not valid"),
        ("sqlite:///s.db?synchronous=SOMETIMES", "not a SQLite sync level"),
        ("memory://x", "takes no path"),
    ],
)
def test_bad_urls_say_what_is_supported(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        open_store(url)
    assert message in str(caught.value)


def test_an_unreachable_postgresql_server_is_a_clear_error() -> None:
    from sagaflow import StoreError

    for url in ("postgresql://u@no-such-host.invalid/db", "postgres://u@no-such-host.invalid/db"):
        with pytest.raises(StoreError, match="cannot connect to the sagaflow store"):
            open_store(url)


def test_something_that_is_neither_a_url_nor_a_store() -> None:
    with pytest.raises(TypeError, match="a store is a URL"):
        open_store(42)  # type: ignore[arg-type]
