"""The playground in a real browser: headless Debian chromium driven by selenium, against a
live uvicorn serving real (tiny) bundles.

Run with `scripts/browser-test.sh` (installs chromium and chromium-driver when missing) or
`pytest -m browser`. With RNNLM_SCREENSHOTS=DIR the test saves DIR/playground.png and
DIR/swagger.png; with RNNLM_BROWSER_CHECKPOINTS=DIR the server serves DIR (for instance
the committed default bundles) instead of the tiny ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import checkpoint_dir, running_server  # noqa: F401  (fixture re-use)

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RNNLM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RNNLM_CHROMEDRIVER", "/usr/bin/chromedriver")
# The flags that work on these machines (root, no GPU, no network): see tooling notes.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,800",
]
WAIT_S = 60
SCREENSHOT_MAX_BYTES = 300_000


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        return (
            f"needs {CHROMIUM} and {CHROMEDRIVER}: run scripts/browser-test.sh, or "
            "apt-get install chromium chromium-driver"
        )
    return None


if (reason := _missing()) is not None:
    # scripts/browser-test.sh sets RNNLM_BROWSER_REQUIRED: there a skip would hide a failure.
    if os.environ.get("RNNLM_BROWSER_REQUIRED"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    served = os.environ.get("RNNLM_BROWSER_CHECKPOINTS")
    bundles = Path(served) if served else request.getfixturevalue("checkpoint_dir")
    with running_server(bundles) as server:
        yield server.url


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="rnnlm-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    # The performance log holds the network events: how the page really called the API.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, condition: Any, message: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
        lambda d: condition(d), message=message
    )


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def fill(driver: Any, element_id: str, value: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(value)


def network_events(driver: Any) -> list[dict[str, Any]]:
    return [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]


def screenshot(driver: Any, name: str, full_page: bool = False) -> None:
    """Save DIR/name when RNNLM_SCREENSHOTS=DIR, a full-page shot when asked."""
    folder = os.environ.get("RNNLM_SCREENSHOTS")
    if not folder:
        return
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if full_page:  # a viewport as tall as the page (the window's height includes its frame)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _shrink(path)


def _shrink(path: Path) -> None:
    """Docs images stay small: a 256-colour palette keeps text and plots crisp."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    assert path.stat().st_size <= SCREENSHOT_MAX_BYTES, f"{path} is over 300 KB"


def test_generation_streams_into_the_page(driver: Any, url: str) -> None:
    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), "no models")
    choices = driver.find_elements(By.CSS_SELECTOR, "#model option")
    options = [o.get_attribute("value") for o in choices]
    assert options and "sine-mlp" not in options  # only language models generate
    driver.get_log("performance")  # drop the page-load events
    # Count the page's updates of the output: one per streamed event, not one at the end.
    driver.execute_script(
        "window.updates = 0; new MutationObserver((records) => { window.updates += "
        "records.length; }).observe(document.getElementById('gen-text'), "
        "{childList: true, characterData: true, subtree: true});"
    )
    fill(driver, "prefix", "The Time Traveller ")
    fill(driver, "seed", "7")
    fill(driver, "max-new-tokens", "120")
    driver.find_element(By.ID, "generate").click()
    wait_for(
        driver,
        lambda d: text_of(d, "gen-finish") not in ("-", "…") or text_of(d, "gen-error"),
        "the generation never finished",
    )
    assert text_of(driver, "gen-error") == ""
    assert text_of(driver, "gen-finish") in ("length", "stop")
    cleaned = driver.find_element(By.ID, "gen-prefix").get_attribute("textContent")
    assert cleaned == "the time traveller "  # cleaned by the bundle's rule
    generated = driver.find_element(By.ID, "gen-text").get_attribute("textContent")
    assert generated.strip(), "no generated text"
    assert "generated" in text_of(driver, "gen-usage") and "seed 7" in text_of(driver, "gen-usage")
    assert driver.execute_script("return window.updates") > 1, "text arrived in one piece"

    events = network_events(driver)
    sent = [
        e["params"]["request"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["request"]["url"].endswith("/v1/generate")
    ]
    assert len(sent) == 1 and sent[0]["method"] == "POST"
    assert json.loads(sent[0]["postData"])["stream"] is True
    received = [
        e["params"]["response"]
        for e in events
        if e["method"] == "Network.responseReceived"
        and e["params"]["response"]["url"].endswith("/v1/generate")
    ]
    assert received[0]["mimeType"] == "text/event-stream"


def generate_and_wait(driver: Any) -> str:
    """Click Generate, wait for the finish reason, return the generated text."""
    driver.find_element(By.ID, "generate").click()
    wait_for(
        driver,
        lambda d: text_of(d, "gen-finish") not in ("-", "…") or text_of(d, "gen-error"),
        "the generation never finished",
    )
    return str(driver.find_element(By.ID, "gen-text").get_attribute("textContent"))


def test_a_random_seed_is_shown_and_reused(driver: Any, url: str) -> None:
    fill(driver, "seed", "")
    fill(driver, "max-new-tokens", "40")
    first = generate_and_wait(driver)
    assert text_of(driver, "gen-error") == "" and text_of(driver, "gen-finish") == "length"
    shown = text_of(driver, "gen-usage").split()[1]  # "seed N · ..."
    assert shown.isdigit()
    reuse = driver.find_element(By.ID, "reuse-seed")
    assert reuse.is_displayed()
    reuse.click()
    assert driver.find_element(By.ID, "seed").get_attribute("value") == shown
    assert generate_and_wait(driver) == first  # the same seed gives the same text
    assert f"seed {shown}" in text_of(driver, "gen-usage")


def test_the_largest_seed_stays_exact_and_a_larger_one_is_a_422(driver: Any, url: str) -> None:
    largest = str(2**53 - 1)  # JavaScript's largest exact integer
    fill(driver, "seed", largest)
    fill(driver, "max-new-tokens", "5")
    generate_and_wait(driver)
    assert text_of(driver, "gen-finish") == "length"
    assert f"seed {largest}" in text_of(driver, "gen-usage")  # the server read it unrounded
    fill(driver, "seed", str(2**53 + 1))
    generate_and_wait(driver)
    error = text_of(driver, "gen-error")
    assert error.startswith("422") and "seed" in error and largest in error
    assert text_of(driver, "gen-finish") == "error"
    fill(driver, "seed", "7")
    fill(driver, "temperature", "9")
    generate_and_wait(driver)
    error = text_of(driver, "gen-error")
    assert error.startswith("422") and "temperature" in error
    fill(driver, "temperature", "0.8")  # back to the first test's output, for the screenshot
    fill(driver, "max-new-tokens", "120")
    generate_and_wait(driver)
    assert text_of(driver, "gen-error") == ""


def test_hovering_a_character_shows_its_distribution(driver: Any, url: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    fill(driver, "seed", "3")
    fill(driver, "max-new-tokens", "40")
    fill(driver, "no-repeat-ngram-size", "6")
    driver.find_element(By.ID, "generate").click()
    wait_for(driver, lambda d: text_of(d, "gen-finish") == "length", "no finish reason")
    spans = driver.find_elements(By.CSS_SELECTOR, "#gen-text .tok")
    generated = driver.find_element(By.ID, "gen-text").get_attribute("textContent")
    assert len(spans) == 40 and "".join(s.get_attribute("textContent") for s in spans) == generated
    assert driver.find_element(By.ID, "dist").get_attribute("hidden") is not None
    ActionChains(driver).move_to_element(spans[5]).perform()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#dist-bars .bar"), "no bars")
    bars = driver.find_elements(By.CSS_SELECTOR, "#dist-bars .bar")
    vocab = driver.execute_script("return tokens[5].top.length")
    assert len(bars) == vocab > 1  # the small vocabulary, whole
    chosen = driver.find_elements(By.CSS_SELECTOR, "#dist-bars .bar.chosen b")
    assert [c.get_attribute("textContent") for c in chosen] == [
        spans[5].get_attribute("textContent").replace(" ", "␣")
    ]
    percents = [float(b.find_element(By.TAG_NAME, "span").text.rstrip("%")) for b in bars]
    assert percents == sorted(percents, reverse=True) and 95 <= sum(percents) <= 100.5
    spans[9].click()  # a click pins token 10: hovering elsewhere no longer moves the chart
    ActionChains(driver).move_to_element(spans[2]).perform()
    assert text_of(driver, "dist-title").startswith("token 10:")
    fill(driver, "no-repeat-ngram-size", "0")


def test_perplexity_box_scores_text_and_shows_api_errors(driver: Any, url: str) -> None:
    fill(driver, "ppl-text", "the time traveller smiled round at us")
    driver.find_element(By.ID, "score").click()
    wait_for(driver, lambda d: text_of(d, "ppl-value") not in ("", "-", "…"), "no perplexity")
    assert float(text_of(driver, "ppl-value")) > 1.0
    assert float(text_of(driver, "ppl-bits")) > 0.0
    scored = int(text_of(driver, "ppl-tokens").split()[0])
    assert scored == len("the time traveller smiled round at us") - 1  # chars after the first
    # A text with one token cannot be scored: the service's 422 reaches the user.
    fill(driver, "ppl-text", "a")
    driver.find_element(By.ID, "score").click()
    error = wait_for(driver, lambda d: text_of(d, "ppl-error"), "the 422 was swallowed")
    assert error.startswith("422") and "text" in error
    assert text_of(driver, "ppl-value") == "-"
    fill(driver, "ppl-text", "the time traveller smiled round at us")
    driver.find_element(By.ID, "score").click()
    wait_for(driver, lambda d: text_of(d, "ppl-value") not in ("", "-", "…"), "no perplexity")


def test_ngram_table_and_forecast_plots_render(driver: Any, url: str, book_path: Path) -> None:
    driver.find_element(By.ID, "count").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#ng-tables table"), "no tables")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#ng-tables table")) == 3
    assert "Zipf exponent" in text_of(driver, "ng-summary")
    loaded = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth"
    wait_for(driver, lambda d: d.execute_script(loaded, "ng-plot"), "no Zipf plot")
    driver.find_element(By.ID, "forecast").click()
    wait_for(driver, lambda d: d.execute_script(loaded, "fc-plot"), "no forecast plot")
    assert text_of(driver, "fc-error") == ""
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver, "playground.png", full_page=True)


def test_the_selected_models_training_curves_render(driver: Any, url: str) -> None:
    driver.get(url)
    loaded = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth"
    wait_for(driver, lambda d: d.execute_script(loaded, "tr-curves"), "no training curves")
    assert "epochs of" in text_of(driver, "tr-summary")
    assert text_of(driver, "tr-samples").startswith("time traveller")
    first = driver.execute_script("return document.getElementById('tr-curves').src")
    select = driver.find_element(By.ID, "model")
    other = next(o for o in select.find_elements(By.TAG_NAME, "option") if not o.is_selected())
    other.click()  # another model: its own history and curves
    wait_for(
        driver,
        lambda d: (
            d.execute_script(loaded, "tr-curves")
            and d.execute_script("return document.getElementById('tr-curves').src") != first
        ),
        "the curves did not follow the selected model",
    )
    assert text_of(driver, "tr-error") == ""


def test_swagger_ui_renders_offline(driver: Any, url: str) -> None:
    driver.get(url + "/docs")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"), "Swagger UI is blank")
    screenshot(driver, "swagger.png")
