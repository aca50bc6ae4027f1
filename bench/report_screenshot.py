"""A run's report.html in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium. The browser test (tests/test_loop.py) reads the rendered page through it, and this
command takes the screenshot in docs/:

    python -m bench.report_screenshot runs/snips-cpu-qwen --output docs/report.png

The page is opened from the file system, as a user on an air-gapped machine would; Chromium is told
not to reach any network service of its own (no updates, no sync, no metrics)."""

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

# Where Debian puts them; Selenium Manager (which would download a driver) is never asked.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the sandbox needs user namespaces that a root CI container does not have
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--hide-scrollbars",
]


def browser_available() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


@contextlib.contextmanager
def headless_chromium(width: int = 1280, height: int = 1000) -> Iterator["object"]:
    """A Selenium WebDriver for headless Chromium with a window of width x height CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_report(driver, page: Path) -> None:
    """Load a report page and wait until its images are decoded."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: (
            d.execute_script("return [...document.images].every(i => i.complete) && document.readyState") == "complete"
        )
    )


def screenshot(run: Path, output: Path, width: int = 1280, max_height: int = 4000) -> Path:
    """The run's report.html with its first wrong seed example and that example's teacher answer open."""
    page = run / "report.html"
    if not page.is_file():
        raise SystemExit(f"error: {page} does not exist; rerun the boost command of {run} (it rewrites the report)")
    with headless_chromium(width) as driver:
        open_report(driver, page)
        driver.execute_script(
            """const item = document.querySelector("details.item");
               if (item) { item.open = true; const t = item.querySelector("details"); if (t) t.open = true; }"""
        )
        height = min(driver.execute_script("return document.documentElement.scrollHeight"), max_height)
        driver.set_window_size(width, height)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp.png")
        driver.save_screenshot(str(tmp))
        tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run directory (runs/<run>)")
    parser.add_argument("--output", type=Path, default=Path("docs/report.png"), help="where the PNG goes")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--max-height", type=int, default=4000, help="crop the page at this height")
    args = parser.parse_args(argv)
    if not browser_available():
        print(f"error: {CHROMIUM} or {CHROMEDRIVER} is missing; apt-get install chromium chromium-driver",
              file=sys.stderr)  # fmt: skip
        return 2
    print(screenshot(args.run, args.output, args.width, args.max_height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
