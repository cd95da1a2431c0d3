"""Screenshots of the dashboard's main pages, for a person to look at.

::

    python -m sagaflow.ui.screenshots --store sqlite:///out/sagas.db --out docs/screenshots
        [--import MODULE]... [--saga ID]

Serves the dashboard over the store on a free loopback port, opens it in Debian's
headless Chromium (``apt-get install chromium chromium-driver``) and writes
``sagas.png`` (the list), ``saga.png`` (a saga's page: ``--saga``, or the newest FAILED
one, else the newest), ``confirm.png`` (the confirmation of its first action),
``class.png`` (its saga class's page) and ``incidents.png`` (the sagas with an
incident).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..cli.session import Session
from ..records import SagaStatus
from .app import create_app
from .serve import chromium, served

__all__ = ["main", "shoot"]


def shoot(url: str, modules: list[str], out: Path, saga_id: str | None = None) -> list[Path]:
    """Write the screenshots into ``out``; the files written."""
    if saga_id is None:
        with Session(url, modules, readonly=True) as session:
            found = next(session.store.scan(status=[SagaStatus.FAILED], newest_first=True,
                                            limit=1), None)
            found = found or next(session.store.scan(newest_first=True, limit=1), None)
            saga_id = None if found is None else found.saga_id
            name = None if found is None else found.saga_name
    else:
        with Session(url, modules, readonly=True) as session:
            name = session.raw(saga_id).saga_name
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    browser = chromium()
    try:
        with served(create_app(url, modules, operator="screenshots")) as base:
            pages = [("sagas.png", f"{base}/sagas"),
                     ("incidents.png", f"{base}/sagas?incidents=1")]
            if saga_id is not None:
                pages.append(("saga.png", f"{base}/sagas/{saga_id}"))
            if name is not None:
                pages.append(("class.png", f"{base}/classes/{quote(name, safe='')}"))
            for name, address in pages:
                written.append(_shot(browser, address, out / name))
            if saga_id is not None:
                from selenium.webdriver.common.by import By

                browser.get(f"{base}/sagas/{saga_id}")
                actions = browser.find_elements(By.CSS_SELECTOR, "#actions a")
                if actions:
                    address = actions[0].get_attribute("href")
                    written.append(_shot(browser, address, out / "confirm.png"))
    finally:
        browser.quit()
    return written


def _shot(browser: Any, address: str, path: Path) -> Path:
    browser.set_window_size(1280, 1000)
    browser.get(address)
    for _ in range(2):  # once more: the first resize can change the layout's height
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(max(int(height) + 140, 600), 4000))
    browser.save_screenshot(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagaflow.ui.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the store's URL")
    parser.add_argument("--import", dest="modules", action="append", default=[],
                        metavar="MODULE", help="a module with saga classes (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--saga", default=None, help="the saga whose page to shoot")
    args = parser.parse_args(argv)
    for path in shoot(args.store, args.modules, args.out, args.saga):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
