// A musician in a real browser (Debian's chromium), against a running
// `hendu serve`. Run by tests/e2e/tests/web.rs, which starts the server,
// makes the musician and their catalogue, and feeds the pipeline when this
// script says the dashboard is open.
//
// Environment: HENDU_WEB (base URL), HENDU_EMAIL, HENDU_PASSWORD,
// HENDU_SCREENSHOTS (a directory for the pages' screenshots).
// Prints `OPEN` once the dashboard is open, then `LIVE <play id> <epoch ms>`
// when the first play appears on it without a reload; exits non-zero on any
// failed check.
import { accessible, check, launch, newPage } from "./common.mjs";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const base = process.env.HENDU_WEB;
const email = process.env.HENDU_EMAIL;
const password = process.env.HENDU_PASSWORD;
const shots = process.env.HENDU_SCREENSHOTS || "target/screenshots";
mkdirSync(shots, { recursive: true });

const browser = await launch();
try {
  const page = await newPage(browser);

  // Signing in.
  await page.goto(base + "/");
  check(page.url().includes("/sign-in"), "an anonymous visitor is sent to sign in");
  await accessible(page, "sign-in");
  await page.screenshot({ path: join(shots, "sign-in.png") });
  await page.fill("#email", email);
  await page.fill("#password", "not the password");
  await page.click("main button[type=submit]");
  check((await page.textContent(".problem")).includes("Wrong"), "a wrong password is refused");
  await page.fill("#password", password);
  await page.click("main button[type=submit]");
  await page.waitForURL(/\/dashboard/);
  await page.waitForSelector("#live-plays");
  await page.waitForSelector(".live-status.on", { timeout: 10000 });
  check((await page.textContent("footer")).includes("UTC-03:00"), "times are in the viewer's zone");
  console.log("OPEN");

  // A play recorded through the pipeline appears without a reload.
  await page.waitForSelector("#live-plays[data-first-live]", { timeout: 180000 });
  const first = await page.getAttribute("#live-plays", "data-first-live");
  console.log(`LIVE ${first}`);
  await page.waitForTimeout(3000);
  await page.reload();
  await page.waitForSelector("#live-plays tbody tr");
  await accessible(page, "dashboard");
  await page.screenshot({ path: join(shots, "dashboard.png"), fullPage: true });

  // The plays table, a play's page, the CSV.
  await page.click("header nav >> text=Plays");
  await page.waitForURL(/\/plays$/);
  const rows = await page.$$("table.plays tbody tr");
  check(rows.length >= 1, "the plays table lists the plays");
  await accessible(page, "plays");
  await page.screenshot({ path: join(shots, "plays.png"), fullPage: true });
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("text=Export CSV"),
  ]);
  const csv = readFileSync(await download.path(), "utf8").trim().split(/\r?\n/);
  check(csv[0].startsWith("play_id,started_at_utc,date"), "the CSV has its header");
  check(csv.length - 1 === rows.length, `the CSV has a row per play (${csv.length - 1} / ${rows.length})`);
  await page.click("table.plays tbody tr >> nth=0 >> a");
  await page.waitForURL(/\/plays\/\d+$/);
  check((await page.textContent("h1")).length > 0, "a play's page names the track");
  check((await page.$$("#evidence + p + table tbody tr")).length >= 1, "a play's page shows its samples");
  await accessible(page, "play");
  await page.screenshot({ path: join(shots, "play.png"), fullPage: true });
  const playPage = page.url();

  // Her catalogue: a track uploaded with its details, with a progress bar.
  await page.click("header nav >> text=Catalogue");
  await page.waitForURL(/\/catalogue$/);
  check((await page.$$("#tracks tbody tr")).length >= 1, "the catalogue lists her tracks");
  await page.setInputFiles("#file", "shared/fingerprint/tests/fixtures/tones.opus");
  await page.fill("#title", "Tonos");
  await page.fill("#artist", "Ana");
  await page.fill("#isrc", "PY-A01-26-00007");
  await Promise.all([
    page.waitForURL(/\/catalogue\?added=\d+$/, { timeout: 60000 }),
    page.click("#upload button[type=submit]"),
  ]);
  check((await page.textContent("p.notice")).includes("Track added"), "an upload is added");
  check((await page.textContent("#tracks")).includes("PYA012600007"), "with its ISRC");
  await accessible(page, "catalogue");
  await page.screenshot({ path: join(shots, "catalogue.png"), fullPage: true });
  await page.goto(playPage);

  // In Spanish.
  await page.click("header a.lang");
  await page.waitForSelector("html[lang=es]");
  check((await page.textContent("h2#evidence")) === "Evidencia", "the switch shows the page in Spanish");
  await page.goto(base + "/dashboard");
  check((await page.textContent("h1")) === "Sus reproducciones", "and keeps it");
  await accessible(page, "panel");
  await page.screenshot({ path: join(shots, "dashboard-es.png"), fullPage: true });

  // Signing out.
  await page.click("header form.inline button");
  await page.waitForURL(/\/sign-in/);
  await page.goto(base + "/plays");
  check(page.url().includes("/sign-in"), "signed out");
} finally {
  await browser.close();
}
