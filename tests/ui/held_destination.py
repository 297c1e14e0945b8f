#!/usr/bin/env python3
"""Opens the delivery log page (/ui/) in a real headless Chromium while a breaker holds a
destination, as an operator would: the page names the held destination above the list, and a
delivery's detail shows its destination's breaker.

  held_destination.py ADMIN_URL ROUTE DESTINATION
"""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

admin, route, destination = sys.argv[1:4]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,900"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 15)


def held(d):
    text = d.find_element(By.ID, "held").text
    return f"{route} → {destination}, breaker " in text and ("open until" in text or "probing" in text)


def breaker_cell(d):
    # The page re-renders the detail as it refreshes: read it again if it changed under us.
    try:
        cell = d.find_element(By.CSS_SELECTOR, "#detail td.breaker").text
        return cell if cell.startswith("open until") or cell == "probing" else False
    except (StaleElementReferenceException, NoSuchElementException):
        return False


try:
    driver.get(admin + "/ui/")
    wait.until(held)
    for _ in range(50):
        try:
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rows tr")).click()
            break
        except StaleElementReferenceException:
            continue
    else:
        raise AssertionError("no delivery row held still")
    wait.until(breaker_cell)
    print("ok")
finally:
    driver.quit()
