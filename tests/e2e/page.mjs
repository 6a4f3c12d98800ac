// Headless Chromium and the chat page, for the browser tests: launching,
// opening the page, entering a room, and counting what it shows.
import { chromium } from 'playwright-core';

export const WAIT = 10_000;

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A fresh browser context (own storage) with the page open on `url`. */
export async function openPage(browser, url, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(url);
  return { page, errors };
}

/** Fills the start form and waits until `room` is joined and the page is online. */
export async function enter(page, name, room) {
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('room-input').fill(room);
  await page.getByTestId('start').click();
  await page.locator('[data-testid="status"][data-state="online"]').waitFor();
  await page.locator(`[data-testid="room"][data-room="${room}"][data-state="joined"]`).waitFor();
}

/** How many message elements show exactly `text`. */
export function countText(page, text) {
  return page.evaluate(
    (t) => [...document.querySelectorAll('[data-testid="message"] [data-testid="message-text"]')]
      .filter((e) => e.textContent === t).length,
    text,
  );
}

export async function waitForText(page, text, n = 1, timeout = WAIT) {
  await page.waitForFunction(
    ([t, n]) => [...document.querySelectorAll('[data-testid="message"] [data-testid="message-text"]')]
      .filter((e) => e.textContent === t).length >= n,
    [text, n],
    { timeout },
  );
}
