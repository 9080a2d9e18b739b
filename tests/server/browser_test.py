#!/usr/bin/env python3
"""omniflux-server's web page in headless Chromium (Debian chromium + chromium-driver, driven through
python3-selenium): it loads, a prompt submitted from the form moves the progress bar through
intermediate values and puts the image in the gallery, and a chat about an uploaded image streams an
answer, then a second message goes out with the conversation (history and image) kept. Writes a
screenshot. Run by ctest as server.browser; every wait is bounded."""
import argparse
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def png_bytes(w, h):
    """A small gradient PNG, written with zlib alone."""
    raw = b"".join(b"\x00" + bytes(((x * 7 + y * 3 + c * 50) % 256) for x in range(w) for c in range(3)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


T0 = time.monotonic()


def mark(what):
    print("[%5.1f s] %s" % (time.monotonic() - T0, what), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="build/bin with omniflux-server and omniflux-tiny")
    ap.add_argument("--tokenizers", required=True)
    ap.add_argument("--screenshot", required=True)
    args = ap.parse_args()

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        fail("python3-selenium is missing: apt-get install chromium chromium-driver python3-selenium "
             "(scripts/setup.sh installs them)")
    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(exe):
            fail(exe + " is missing: apt-get install chromium chromium-driver (scripts/setup.sh installs them)")

    with tempfile.TemporaryDirectory(prefix="omniflux-browser-") as tmp:
        subprocess.run([os.path.join(args.bin, "omniflux-tiny"), "--out", tmp, "--seed", "5", "--only", "flux_1_dev",
                        "--only", "uniworld_v1", "--only", "siglip2", "--only", "x_omni", "--tokenizers", args.tokenizers],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        mark("tiny models written")
        log = open(os.path.join(tmp, "server.log"), "w")
        server = subprocess.Popen(
            [os.path.join(args.bin, "omniflux-server"), "--uniworld", os.path.join(tmp, "uniworld-v1"),
             "--flux", os.path.join(tmp, "flux.1-dev"), "--siglip", os.path.join(tmp, "siglip2"),
             "--xomni", os.path.join(tmp, "x-omni"), "--threads", "2", "--port", "0"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        driver = None
        try:
            line = server.stdout.readline()  # the server prints this once it listens (or exits)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if not m:
                fail("server did not start: " + line + open(os.path.join(tmp, "server.log")).read())
            url = m.group(1)
            mark("server listening")

            opts = webdriver.ChromeOptions()
            opts.binary_location = "/usr/bin/chromium"
            for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                      "--window-size=1280,900"):
                opts.add_argument(a)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
            driver.set_page_load_timeout(60)
            mark("browser started")
            driver.get(url + "/")
            wait = WebDriverWait(driver, 120)
            if driver.title != "omniflux":
                fail("page title is " + repr(driver.title))
            # the model lists fill from /v1/models
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#image-model option")) == 2)
            status = driver.find_element(By.ID, "status").text
            if "uniworld-v1" not in status:
                fail("status line: " + status)

            # ---- generate: a small image, enough steps for the bar to show intermediate values
            driver.execute_script("document.getElementById('image-model').value = 'uniworld-v1';"
                                  "document.getElementById('image-model').dispatchEvent(new Event('change'));")
            for field, value in (("width", "64"), ("height", "64"), ("steps", "8"), ("seed", "11")):
                el = driver.find_element(By.ID, field)
                el.clear()
                el.send_keys(value)
            driver.find_element(By.ID, "prompt").send_keys("A lighthouse on a cliff at dusk")
            driver.find_element(By.ID, "generate").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery figure img")) == 1)
            err = driver.find_element(By.ID, "image-error").text
            if err:
                fail("image error shown: " + err)
            wait.until(lambda d: d.execute_script("return document.querySelector('#gallery img').complete"))
            size = driver.execute_script(
                "const i = document.querySelector('#gallery img'); return [i.naturalWidth, i.naturalHeight];")
            if size != [64, 64]:
                fail("gallery image is %r, expected 64x64" % (size,))
            shown = driver.execute_script("return window.omnifluxProgress")
            middle = [v for v in shown if 0 < v < 1]
            if len(set(middle)) < 3 or shown[-1] != 1:
                fail("progress bar values %r: expected several between 0 and 1, then 1" % (shown,))
            if any(b < a for a, b in zip(middle, middle[1:])):
                fail("progress went backwards: %r" % (shown,))
            href = driver.find_element(By.CSS_SELECTOR, "#gallery figcaption a").get_attribute("download")
            if not href.endswith(".png"):
                fail("download name " + repr(href))

            mark("image generated")
            # ---- chat: upload an image, ask, read the streamed answer
            driver.find_element(By.ID, "tab-chat").click()
            driver.execute_script("document.getElementById('chat-model').value = 'x-omni';")
            img_path = os.path.join(tmp, "question.png")
            with open(img_path, "wb") as f:
                f.write(png_bytes(80, 64))
            driver.find_element(By.ID, "chat-image").send_keys(img_path)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat-preview img")) == 1)
            driver.find_element(By.ID, "question").send_keys("What is in the picture?")
            driver.find_element(By.ID, "max-tokens").send_keys("24")
            driver.find_element(By.ID, "ask").click()

            def answered(d):
                if d.find_element(By.ID, "chat-error").text:
                    return True
                found = d.find_elements(By.ID, "answer")
                return bool(found) and found[0].get_attribute("data-done") == "1"

            wait.until(answered)
            err = driver.find_element(By.ID, "chat-error").text
            if err:
                fail("chat error shown: " + err)
            mark("chat answered")
            answer = driver.find_element(By.ID, "answer").get_attribute("textContent")
            if not answer:
                fail("empty chat answer")
            # a second, text-only message: the conversation (with the first turn's image) goes along
            driver.find_element(By.ID, "question").send_keys("And its colours?")
            driver.find_element(By.ID, "ask").click()
            wait.until(lambda d: answered(d) and len(d.find_elements(By.CSS_SELECTOR, "#transcript .turn")) == 4)
            err = driver.find_element(By.ID, "chat-error").text
            if err:
                fail("second chat message: error shown: " + err)
            turns = driver.find_elements(By.CSS_SELECTOR, "#transcript .turn")
            roles = [t.get_attribute("class").split()[-1] for t in turns]
            if roles != ["user", "assistant", "user", "assistant"]:
                fail("transcript turns " + repr(roles))
            if len(turns[0].find_elements(By.TAG_NAME, "img")) != 1 or turns[2].find_elements(By.TAG_NAME, "img"):
                fail("the image should show in the first user turn only")
            kept = driver.execute_script("return chatMessages.map((m) => m.role + ':' + (Array.isArray(m.content) ? "
                                         "m.content.map((p) => p.type).join('+') : 'text'));")
            if kept != ["user:text+image_url", "assistant:text", "user:text", "assistant:text"]:
                fail("conversation kept by the page: " + repr(kept))
            if not driver.find_element(By.ID, "answer").get_attribute("textContent"):
                fail("empty second answer")
            mark("second message answered with the history")

            os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
            chat_shot = re.sub(r"(\.png)?$", "_chat.png", args.screenshot, count=1)
            driver.save_screenshot(chat_shot)
            driver.find_element(By.ID, "tab-image").click()
            driver.save_screenshot(args.screenshot)
            print("page OK: image %dx%d, %d progress values, chat answer %d chars; screenshots %s, %s"
                  % (size[0], size[1], len(shown), len(answer), args.screenshot, chat_shot))
        finally:
            if driver is not None:
                driver.quit()
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                fail("server did not exit after SIGTERM")
            log.close()
            if rc != 0:
                fail("server exited with %d:\n%s" % (rc, open(os.path.join(tmp, "server.log")).read()))


if __name__ == "__main__":
    main()
