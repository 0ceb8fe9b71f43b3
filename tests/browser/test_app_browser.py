"""The explorer in a real browser: `hf-topo app` on localhost, driven by headless Chromium through Selenium.

Debian's ``chromium`` and ``chromium-driver`` packages are needed (CI installs them: scripts/install_browser.sh).
Without them the test is skipped on a developer's machine, and fails under CI (``CI=true``).
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from _scripts import offline_env

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI", "").lower() in ("1", "true"):
        raise RuntimeError(
            "CI needs Debian's chromium and chromium-driver for the browser test: bash scripts/install_browser.sh"
        )
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (bash scripts/install_browser.sh)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(300))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"hf-topo app exited with {process.returncode} before serving:\n{process.stdout.read()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"hf-topo app did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """`hf-topo app` serving a tiny GPT-2 TopoNet (sheets recorded with τ=1) on a free localhost port; stopped after."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_topo import TopoConfig, TopoRegularizer
    from hf_topo.data import train_bpe_tokenizer

    model_dir = tmp_path_factory.mktemp("browser") / "toponet"
    tokenizer = train_bpe_tokenizer([CORPUS], vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], tau=1.0)).config_for(model).attach_to(model.config)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    port = _free_port()
    env = offline_env() | {"GRADIO_ANALYTICS_ENABLED": "False"}
    command = [str(Path(sys.executable).with_name("hf-topo")), "app", "--model", str(model_dir), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode is not None  # the server is stopped


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _image_stats(png: bytes) -> tuple[float, "object"]:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(pixels.std()), pixels


def _show_responses(driver, text: str, previous_src: str | None) -> str:
    box = driver.find_element(By.CSS_SELECTOR, "#text-input textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    driver.find_element(By.ID, "show-responses").click()

    def new_image(d):
        images = d.find_elements(By.CSS_SELECTOR, "#responses-map img")
        src = images[0].get_attribute("src") if images else None
        ready = src and src != previous_src and d.execute_script("return arguments[0].complete", images[0])
        return src if ready else False

    return WebDriverWait(driver, 90).until(new_image)


def test_typing_a_sentence_draws_its_map_in_the_browser(served_app, browser, tmp_path):
    browser.get(served_app)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text-input textarea"))
    assert "2 topographic layer(s)" in browser.find_element(By.ID, "model-note").text

    first_src = _show_responses(browser, "the quick brown fox jumps", None)
    element = browser.find_element(By.CSS_SELECTOR, "#responses-map img")
    first_png = element.screenshot_as_png
    screenshots = Path(os.environ.get("HF_TOPO_SCREENSHOT_DIR", tmp_path))
    screenshots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(screenshots / "explorer_page.png"))
    first_std, first_pixels = _image_stats(first_png)
    assert first_std > 10, f"the map image is blank (grey-level std {first_std:.1f})"
    assert "token(s) on transformer.h.0.mlp.c_fc" in browser.find_element(By.ID, "responses-message").text

    second_src = _show_responses(browser, "Line 3: over the lazy dog 5 times.", first_src)
    assert second_src != first_src
    second_std, second_pixels = _image_stats(
        browser.find_element(By.CSS_SELECTOR, "#responses-map img").screenshot_as_png
    )
    assert second_std > 10
    (screenshots / "responses_first.png").write_bytes(first_png)
    if first_pixels.shape == second_pixels.shape:
        changed = float((abs(first_pixels - second_pixels) > 8).mean())
        assert changed > 0.01, f"only {changed:.2%} of the map's pixels changed with the input"

    # An empty text is a message in the page, not a traceback.
    box = browser.find_element(By.CSS_SELECTOR, "#text-input textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    browser.find_element(By.ID, "show-responses").click()
    WebDriverWait(browser, 60).until(
        lambda d: "Type some text first" in d.find_element(By.ID, "responses-message").text
    )

    # So is a layer the model does not have, typed into the layer box.
    layer = browser.find_element(By.CSS_SELECTOR, "#layer input")
    layer.send_keys(Keys.CONTROL, "a")
    layer.send_keys(Keys.DELETE)
    layer.send_keys("h.9.mlp.c_fc", Keys.ENTER)
    box.send_keys("the fox")
    browser.find_element(By.ID, "show-responses").click()
    WebDriverWait(browser, 60).until(
        lambda d: "'h.9.mlp.c_fc' is not a topographic layer" in d.find_element(By.ID, "responses-message").text
    )
    assert "transformer.h.1.mlp.c_fc" in browser.find_element(By.ID, "responses-message").text  # the choices named
    assert "Traceback" not in browser.page_source
