// Drives the ledger's dashboard in headless Chromium; run by services/ledger/tests/browser.rs.
// Usage: node dashboard.mjs <base-url> <in-flight deployment id> <artifact dir>
// Prints READY when the in-flight deployment's page is open, then waits (without reloading)
// for the live update that completes it. Any failed check exits non-zero with the reason.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, id, artifacts] = process.argv.slice(2);
if (!base || !id || !artifacts) {
  console.error("usage: node dashboard.mjs <base-url> <deployment id> <artifact dir>");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  // Overview: one card per environment, what runs there, the DORA panel.
  await page.goto(`${base}/`);
  const cards = await page.locator("article.env").count();
  check(cards === 2, `2 environment cards, saw ${cards}`);
  const staging = page.locator('article.env[data-environment="staging"]');
  check(await staging.count() === 1, "a staging card");
  check((await staging.textContent()).includes("xchem/fragalysis-stack:2026.11.1"), "staging runs 2026.11.1");
  check(await page.locator("table.dora tbody tr").count() === 2, "a DORA row per environment");
  check(await page.locator("svg.sparkline").count() >= 1, "a sparkline of recent durations");
  await page.screenshot({ path: join(artifacts, "overview.png"), fullPage: true });

  // Keyboard: the skip link comes first and leads to the content.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  check(focused === "Skip to content", `the first Tab stop is the skip link, was ${focused}`);

  // A completed deployment's timeline: one row per stage and per pod, Conveyor's time marked.
  await page.goto(`${base}/deployments`);
  const rows = await page.locator("table.deployments tbody tr").count();
  check(rows === 3, `3 deployments listed, saw ${rows}`);
  await page.locator("table.deployments tbody tr").last().locator("a").first().click();
  await page.waitForSelector("svg.gantt");
  const stages = await page.locator("svg.gantt g.row.stage").count();
  const pods = await page.locator("svg.gantt g.row.pod").count();
  const tableStages = await page.locator("table.stages tbody tr").count();
  check(stages === tableStages && stages >= 4, `a Gantt row per stage (${stages} vs ${tableStages})`);
  check(pods === 3, `a Gantt row per pod, saw ${pods}`);
  check(await page.locator("svg.gantt g.row.conveyor").count() >= 2, "Conveyor's stages are marked");
  check((await page.locator("svg.gantt title").first().textContent()).startsWith("Timeline of"), "the chart has an accessible title");
  await page.screenshot({ path: join(artifacts, "timeline.png"), fullPage: true });

  // Phone width: nothing overflows the page but the chart's own scroller.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 1, `no horizontal page overflow on a phone, was ${overflow}px`);
  await page.screenshot({ path: join(artifacts, "timeline-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1200, height: 900 });

  // Live: the in-flight deployment completes while its page is open, without a reload.
  await page.goto(`${base}/deployments/${id}`);
  check((await page.locator(".facts .badge").textContent()).includes("running"), "in flight at first");
  const podsBefore = await page.locator("svg.gantt g.row.pod").count();
  await page.waitForFunction(() => document.getElementById("live-status").textContent === "Live");
  await page.evaluate(() => { window.__noReload = true; });
  console.log("READY");
  await page.waitForFunction(
    () => document.querySelector(".facts .badge") && document.querySelector(".facts .badge").textContent.includes("completed"),
    null,
    { timeout: 20000 },
  );
  check(await page.evaluate(() => window.__noReload === true), "updated in place, not reloaded");
  const podsAfter = await page.locator("svg.gantt g.row.pod").count();
  check(podsAfter > podsBefore, `pods appeared live (${podsBefore} → ${podsAfter})`);
  await page.screenshot({ path: join(artifacts, "live-completed.png"), fullPage: true });

  check(errors.length === 0, `no script errors: ${errors.join("; ")}`);
  console.log("OK");
} finally {
  await browser.close();
}
