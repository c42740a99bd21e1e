// An operator and an administrator in a real browser (Debian's chromium),
// against a running `hendu serve`. Run by tests/e2e/tests/web.rs after the
// musician's script.
//
// Environment: HENDU_WEB, HENDU_OPERATOR_EMAIL / HENDU_OPERATOR_PASSWORD,
// HENDU_ADMIN_EMAIL / HENDU_ADMIN_PASSWORD, HENDU_IMEI (a registered,
// enabled device), HENDU_SCREENSHOTS. Exits non-zero on any failed check.
import { accessible, check, launch, newPage } from "./common.mjs";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const base = process.env.HENDU_WEB;
const shots = process.env.HENDU_SCREENSHOTS || "target/screenshots";
const imei = process.env.HENDU_IMEI;

async function signIn(browser, email, password) {
  const page = await newPage(browser);
  await page.goto(base + "/sign-in");
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("main button[type=submit]");
  await page.waitForURL(/\/dashboard/);
  return page;
}

async function download(page, text) {
  const [file] = await Promise.all([page.waitForEvent("download"), page.click(`text=${text}`)]);
  return readFileSync(await file.path());
}

const browser = await launch();
try {
  // The operator: a report of their stations for a period, as files.
  const operator = await signIn(browser, process.env.HENDU_OPERATOR_EMAIL, process.env.HENDU_OPERATOR_PASSWORD);
  check((await operator.$$("header nav >> text=Administration")).length === 0, "an operator has no administration");
  await operator.click("header nav >> text=Reports");
  await operator.waitForURL(/\/reports/);
  await operator.click("main form button[type=submit]");
  await accessible(operator, "report");
  await operator.screenshot({ path: join(shots, "report.png"), fullPage: true });
  const book = await download(operator, "Download XLSX");
  check(book.subarray(0, 2).toString() === "PK", "the workbook is an XLSX (zip) file");
  const summary = (await download(operator, "Summary as CSV")).toString().split(/\r?\n/);
  check(summary[0] === "source,period_from,period_to,utc_offset,title,artist,isrc,plays,duration_s", "the summary has its header");
  const denied = await operator.goto(base + "/admin/devices");
  check(denied.status() === 403, "an operator cannot open the administration");

  // The administrator: the stations, the users, a device disabled.
  const admin = await signIn(browser, process.env.HENDU_ADMIN_EMAIL, process.env.HENDU_ADMIN_PASSWORD);
  await admin.click("header nav >> text=Administration");
  await admin.waitForURL(/\/admin\/stations/);
  await accessible(admin, "stations");
  await admin.click("nav.sections >> text=Users");
  await accessible(admin, "users");
  await admin.screenshot({ path: join(shots, "admin-users.png"), fullPage: true });
  await admin.click("nav.sections >> text=Devices");
  const row = admin.locator("tr", { hasText: imei });
  check((await row.textContent()).includes("enabled"), "the device is enabled");
  await row.locator("button", { hasText: "Disable" }).click();
  await admin.waitForURL(/\/admin\/devices/);
  check((await admin.locator("tr", { hasText: imei }).textContent()).includes("disabled"), "the device is disabled");
  await accessible(admin, "devices");
  await admin.screenshot({ path: join(shots, "admin-devices.png"), fullPage: true });
  console.log("DISABLED " + imei);
} finally {
  await browser.close();
}
