// Drives the operator's controls on the dashboard in headless Chromium; run by
// services/ledger/tests/browser.rs. Usage: node controls.mjs <base-url> <token> <artifact dir>
// Pauses staging (answering the reason prompt), refuses then confirms a rollback (the
// confirmation names the image), resumes; prints ROLLBACK <deployment id> and OK.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, token, artifacts] = process.argv.slice(2);
if (!base || !token || !artifacts) {
  console.error("usage: node controls.mjs <base-url> <token> <artifact dir>");
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
  // Each dialog gets the next planned answer; what it asked is kept.
  const answers = [];
  const asked = [];
  page.on("dialog", async (d) => {
    asked.push(`${d.type()}: ${d.message()}`);
    const a = answers.shift();
    if (a === undefined || a === false) await d.dismiss();
    else await d.accept(a === true ? undefined : a);
  });
  const status = () => page.locator("#action-status").textContent();
  const card = page.locator('article.env[data-environment="staging"]');

  await page.goto(`${base}/`);
  check(await card.locator('button[data-action="pause"]').count() === 1, "a pause button on staging");
  const rollback = card.locator('button[data-action="rollback"]');
  check((await rollback.textContent()).includes("xchem/fragalysis-stack:2026.11.1"), "the rollback button names its target");

  // Without a token nothing is sent.
  answers.push("browser test");
  await card.locator('button[data-action="pause"]').click();
  await page.waitForFunction(() => document.getElementById("action-status").textContent.includes("token"));

  await page.fill("#operator-token", token);
  await page.click('#token-form button[type="submit"]');
  check((await status()).includes("Token set"), "the token is taken");
  check(await page.evaluate(() => document.cookie) === "", "no cookie holds the token");

  // Pause, answering why.
  answers.push("browser test: 500s on /api");
  await card.locator('button[data-action="pause"]').click();
  await page.waitForFunction(() => document.getElementById("action-status").textContent.startsWith("pause staging: done"));
  await page.waitForSelector('article.env[data-environment="staging"] .hold.paused');
  check((await card.locator(".hold.paused").textContent()).includes("browser test: 500s on /api"), "the card says why it is paused");
  check(await card.locator('button[data-action="resume"]').count() === 1, "a resume button while paused");

  // A rollback asks first and names the image; dismissed, nothing happens.
  answers.push(false);
  await card.locator('button[data-action="rollback"]').click();
  check(asked.at(-1).startsWith("confirm: Roll staging back to xchem/fragalysis-stack:2026.11.1"), `the confirmation names the target: ${asked.at(-1)}`);
  answers.push(true);
  await card.locator('button[data-action="rollback"]').click();
  await page.waitForFunction(() => document.getElementById("action-status").textContent.startsWith("rollback staging: done"));
  const done = await status();
  console.log(`ROLLBACK ${done.split("deployment ")[1]}`);

  // Resume.
  await card.locator('button[data-action="resume"]').click();
  await page.waitForFunction(() => document.getElementById("action-status").textContent.startsWith("resume staging: done"));
  await page.waitForSelector('article.env[data-environment="staging"] button[data-action="pause"]');
  check(await card.locator(".hold.paused").count() === 0, "no longer shown paused");
  await page.screenshot({ path: join(artifacts, "controls.png"), fullPage: true });

  // Refused actions show the API's reason: a resume of an environment not paused.
  const refused = await page.evaluate(async (t) => {
    const r = await fetch("/api/environments/staging/resume", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${t}` }, body: "{}" });
    return [r.status, (await r.json()).error];
  }, token);
  check(refused[0] === 409 && refused[1] === "staging is not paused", `a second resume is refused: ${refused}`);

  check(errors.length === 0, `no script errors: ${errors.join("; ")}`);
  console.log("OK");
} finally {
  await browser.close();
}
