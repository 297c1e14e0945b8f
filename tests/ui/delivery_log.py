#!/usr/bin/env python3
"""Drives the delivery log page (/ui/) in a real headless Chromium, as an operator would: give the
token, filter to dead deliveries, open one, see its attempts, press retry, and see it turn
delivered. Saves a screenshot of the page.

  delivery_log.py ADMIN_URL TOKEN DELIVERY_ID SCREENSHOT_PATH
"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

admin, token, delivery_id, screenshot = sys.argv[1:5]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,900"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 15)
try:
    driver.get(admin + "/ui/")
    # Without the token the API refuses: the page says so.
    wait.until(lambda d: "unauthorized" in d.find_element(By.ID, "error").text)

    token_input = driver.find_element(By.ID, "token")
    token_input.send_keys(token)
    token_input.send_keys(Keys.TAB)  # "change" fires: the page reloads its list with the token
    Select(driver.find_element(By.ID, "state")).select_by_visible_text("dead")
    driver.find_element(By.ID, "apply").click()

    # The token's change and the filter each reload the list: a row found in one rendering may
    # be replaced by the next, so it is looked up again until it holds still.
    def dead_row(d):
        try:
            row = d.find_element(By.CSS_SELECTOR, f'tr[data-id="{delivery_id}"]')
            return row if "dead" in row.text else False
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    # Keyboard: focus the row and press Enter to open it.
    for _ in range(50):
        try:
            wait.until(dead_row).send_keys(Keys.ENTER)
            break
        except StaleElementReferenceException:
            time.sleep(0.1)
    else:
        raise AssertionError("the dead delivery's row never held still")
    wait.until(lambda d: delivery_id in d.find_element(By.ID, "detail").text)
    attempts = driver.find_elements(By.CSS_SELECTOR, "#attempts tr")
    assert len(attempts) >= 3, f"{len(attempts) - 1} attempts shown"  # header row + 2 attempts
    assert "500" in driver.find_element(By.ID, "attempts").text

    driver.find_element(By.ID, "retry").click()
    wait.until(lambda d: "requeued 1" in d.find_element(By.ID, "notice").text)
    # The page refreshes itself: the delivery turns delivered without a reload.
    def state():
        # The page re-renders the detail as it refreshes: read it again if it changed under us.
        try:
            return driver.find_element(By.CSS_SELECTOR, "#detail p .state").text
        except (StaleElementReferenceException, NoSuchElementException):
            return ""

    deadline = time.time() + 15
    while state() != "delivered":
        if time.time() > deadline:
            raise AssertionError("the delivery did not turn delivered: " + driver.find_element(By.ID, "detail").text)
        time.sleep(0.5)
        driver.execute_script("refresh()")
    driver.save_screenshot(screenshot)
    print("ok")
finally:
    driver.quit()
