// Drives the demo inbox page in headless Chromium (Debian's, through playwright-core):
// two pages of one user; a sample-event button on the first; the notification appears and
// the badge goes up in both; marked read in the first, the badge goes down in the second;
// a time deal shows its banner in both. Prints SCREENSHOT <path> lines, then OK (or FAIL <why>).
// Usage: node demo_browser.mjs <devstack page URL> <user> <screenshot dir>
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, user, outDir] = process.argv.slice(2);
const STEP_MS = 60000; // each step on a busy 2-core machine
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  headless: true,
  args: ARGS,
  timeout: STEP_MS,
});
const watchdog = setTimeout(() => { console.log('FAIL watchdog'); process.exit(4); }, 8 * STEP_MS);

async function open(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (err) => console.error(`[${name}] page error: ${err.message}`));
  page.on('console', (msg) => { if (msg.type() === 'error') console.error(`[${name}] ${msg.text()}`); });
  await page.goto(`${base}?user=${encodeURIComponent(user)}`);
  return page;
}

const connected = (page, transport) => page.waitForFunction(
  (t) => document.getElementById('status').dataset.state === 'connected'
    && (!t || document.getElementById('transport-in-use').textContent === t),
  transport,
);
const badge = (page, n) => page.waitForSelector(`#badge[data-count="${n}"]`);

async function shot(page, name) {
  const path = join(outDir, name);
  await page.screenshot({ path, fullPage: true });
  console.log(`SCREENSHOT ${path}`);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const first = await open(context, 'first');
  const second = await open(context, 'second');
  await connected(first);
  // The second tab forces a SockJS HTTP transport through the selector.
  await connected(second);
  await second.selectOption('#transport', 'xhr-polling');
  await connected(second, 'xhr-polling');
  await badge(first, 0);
  await badge(second, 0);
  const transports = await Promise.all([first, second].map((p) => p.textContent('#transport-in-use')));
  console.log(`TRANSPORTS ${transports.join(' ')}`);

  await first.click('button[data-topic="shopping.order.created"]');
  const item = 'li.item[data-type="ORDER_CREATED"]';
  await first.waitForSelector(`${item}[data-status="UNREAD"]`);
  await badge(first, 1);
  await second.waitForSelector(`${item}[data-status="UNREAD"]`);
  await badge(second, 1);
  const title = await first.textContent(`${item} .title`);
  const message = await first.textContent(`${item} .message`);
  if (title !== '주문이 접수되었습니다') throw new Error(`title ${title}`);
  console.log(`NOTIFICATION ${title} | ${message}`);
  await shot(first, 'demo-1-notification-arrived.png');

  await first.click(`${item} button.read`);
  await second.waitForSelector(`${item}[data-status="READ"]`);
  await badge(second, 0);
  await badge(first, 0);
  await shot(second, 'demo-2-read-in-second-tab.png');

  await first.click('button[data-topic="shopping.timedeal.started"]');
  await second.waitForSelector('#timedeal', { state: 'visible' });
  await first.waitForSelector('#timedeal', { state: 'visible' });
  console.log(`BANNER ${await second.textContent('#timedeal-message')}`);
  await shot(second, 'demo-3-time-deal-banner.png');

  console.log('OK');
} catch (err) {
  console.log(`FAIL ${err.message.split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
