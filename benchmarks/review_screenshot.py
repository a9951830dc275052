"""Regenerate docs/review.png: the Review page of the bundled demo (ProcessBench math), scored, in Chromium.

Builds a throw-away store (FRACTAL_HOME in a temp directory), loads the demo, embeds and trains it with the
Train page's "quick look" settings in this process, starts the app on a free loopback port, and screenshots
the Review page at 1440x1000 with Debian's Chromium. Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/review_screenshot.py [--out docs/review.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUICK = {"max_epochs": 5, "patience": 2}  # the Train page's "Quick look" preset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "review.png")
    parser.add_argument("--chromium", default=os.environ.get("FRACTAL_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["FRACTAL_HOME"] = str(home)
        db_url = f"sqlite:///{home / 'fractal.db'}"
        from app.settings import load_settings
        from app.worker import Worker
        from db import repository as repo
        from db.engine import get_engine
        from db.ingest import ingest_file
        from db.schema import upgrade
        from fractal_core.data.demo import demo_path
        from tests.app.conftest import CHROMIUM_ARGS, AppServer

        engine = get_engine(db_url, check_schema=False)
        upgrade(engine)
        dataset = ingest_file(engine, demo_path(), "demo").dataset_id
        repo.create_job(engine, "train", {"dataset_id": dataset, "method": "fractal", "config": QUICK})
        Worker(load_settings(db_url)).run(once=True)
        if repo.active_model_version_id(engine, dataset) is None:
            raise SystemExit("training the demo failed; see the job log with `fractal jobs`")

        from playwright.sync_api import sync_playwright

        server = AppServer(home=home, db_url=db_url).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.goto(f"{server.url}/?dataset={dataset}")
                page.wait_for_selector(".fs-response math", timeout=90_000)
                page.wait_for_selector("[data-testid=stDataFrame] .dvn-scroller", timeout=90_000)
                page.wait_for_timeout(1500)  # let the data grid paint
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
