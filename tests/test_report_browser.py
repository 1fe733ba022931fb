"""The HTML report as a person sees it: rendered by a real headless browser (Debian's chromium), offline.

Skipped, with the reason, only where no chromium is installed (.ci/run installs it when it can).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import html5lib
import pytest
from PIL import Image

from melep_cli.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
XHTML = "{http://www.w3.org/1999/xhtml}"
#: Seconds any one browser run may take.
BROWSER_TIMEOUT = 120
#: The hosts chromium itself calls whatever the page (its component updater, account and clock services, even
#: with the flags below that turn off what can be turned off): not the page's requests. No report would fetch
#: from them; a font, script, style or image host (fonts.googleapis.com, a CDN, ...) is caught.
BROWSER_OWN_HOSTS = (
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
    "clientservices.googleapis.com",
    "safebrowsing.googleapis.com",
    "optimizationguide-pa.googleapis.com",
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")


class NetworkWatch:
    """A local listener standing in for the whole network: chromium is told to send every request through it
    as its proxy, so any connection it records is a request the page made."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []  # the first line of each, as sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1.0)
                try:
                    self.requests.append(connection.recv(4096).split(b"\r\n", 1)[0])
                except OSError:
                    self.requests.append(b"(a connection, nothing sent)")

    @property
    def page_requests(self) -> list[str]:
        """The requests recorded, less chromium's own (BROWSER_OWN_HOSTS)."""
        lines = [request.decode(errors="replace") for request in self.requests]
        return [line for line in lines if _host(line) not in BROWSER_OWN_HOSTS]

    @contextmanager
    def running(self) -> Iterator[NetworkWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            self.server.close()


def _host(request_line: str) -> str:
    """The host a proxy request line names: `CONNECT host:443 HTTP/1.1`, `GET http://host/path HTTP/1.1`."""
    parts = request_line.split()
    target = parts[1] if len(parts) > 1 else ""
    return target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


def browse(
    page: Path, tmp_path: Path, proxy_port: int, *arguments: str, script: bool = True
) -> subprocess.CompletedProcess[str]:
    """One headless chromium run on `page`: its own profile (`script`: whether pages may run JavaScript), every
    request sent to the watch, nothing else in the background (no updates, sync or metrics)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    if not script:  # the profile's content setting, as a user turns JavaScript off (the browser's own tools work)
        (profile / "Default").mkdir(parents=True)
        settings = {"profile": {"default_content_setting_values": {"javascript": 2}}}
        (profile / "Default" / "Preferences").write_text(json.dumps(settings), encoding="utf-8")
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--hide-scrollbars",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--safebrowsing-disable-auto-update",
        "--metrics-recording-only",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,DialMediaRouteProvider",
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",  # even 127.0.0.1 and localhost through the watch
        *arguments,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False)


def screenshot(page: Path, tmp_path: Path, watch: NetworkWatch, width: int, *, script: bool = True) -> Image.Image:
    """The page's top 2400 CSS pixels at `width`, with or without JavaScript."""
    shot = tmp_path / f"shot-{width}-{'js' if script else 'nojs'}.png"
    result = browse(page, tmp_path, watch.port, f"--screenshot={shot}", f"--window-size={width},2400", script=script)
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        return image.convert("RGB")


def assert_drawn(image: Image.Image) -> None:
    """Not blank: many colours (charts, heatmaps, text) and a good share of non-white pixels."""
    colours = image.getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 200, len(colours or [])
    white = sum(count for count, colour in colours if min(colour) >= 250)
    assert white / (image.width * image.height) < 0.95


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("browser")
    page, as_json = folder / "report.html", folder / "rank.json"
    arguments = ["rank", "-c", str(SAMPLE / "checkpoints"), "-t", str(SAMPLE / "ptbxl_target.h5"), "--no-cache"]
    assert run([*arguments, "--report", str(page), "-o", str(as_json), "--pairs", "-q"]) == 0
    return page, json.loads(as_json.read_text(encoding="utf-8"))


def test_the_report_in_a_real_browser_offline(report_page: tuple[Path, dict], tmp_path: Path) -> None:
    page, document = report_page
    with NetworkWatch().running() as watch:
        laptop = screenshot(page, tmp_path, watch, 1366)
        without_script = screenshot(page, tmp_path, watch, 1366, script=False)
        phone = screenshot(page, tmp_path, watch, 390)
        dom = browse(page, tmp_path, watch.port, "--dump-dom", script=False)
    assert watch.page_requests == [], watch.page_requests
    for image in (laptop, phone):
        assert_drawn(image)
    # the best row's green (tied shading, the verdict) is on screen at both widths
    for image in (laptop, phone):
        assert any(colour == (166, 219, 160) for _, colour in image.getcolors(maxcolors=1 << 24) or [])
    # without JavaScript the page looks the same (its one script only opens the phi heatmaps for printing)
    assert without_script.tobytes() == laptop.tobytes()
    # the page as the browser holds it, JavaScript off: every checkpoint's name and scores
    main = html5lib.parse(dom.stdout).find(f".//{XHTML}main")
    assert main is not None, dom.stderr[-2000:]
    shown = "".join(main.itertext())  # a name's <wbr> break chances leave its text whole
    for entry in document["results"]:
        assert entry["checkpoint"] in shown
        for score in entry["scores"].values():
            assert f"{score['value']:.4f}" in shown
            assert f"{score['ci'][0]:.4f}" in shown and f"{score['ci'][1]:.4f}" in shown


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """A page with an image by URL is caught by the same watch; a script of a page runs, except with JavaScript
    turned off as above."""
    page = tmp_path / "fetches.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title></head>'
        '<body><p id="said">no script</p><img src="http://melep-network-check.invalid/pixel.png" alt="x">'
        '<script>document.getElementById("said").textContent = "the script ran";</script></body></html>',
        encoding="utf-8",
    )
    with NetworkWatch().running() as watch:
        screenshot(page, tmp_path, watch, 400)
        with_script = browse(page, tmp_path, watch.port, "--dump-dom")
        without_script = browse(page, tmp_path, watch.port, "--dump-dom", script=False)
    assert any("melep-network-check.invalid" in request for request in watch.page_requests), watch.requests
    assert "the script ran" in with_script.stdout
    assert "no script" in without_script.stdout and "the script ran</p>" not in without_script.stdout
