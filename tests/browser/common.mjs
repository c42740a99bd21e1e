// What the browser scripts share: the browser as this machine has it
// (Debian's chromium), a check that fails the script, and the
// accessibility check (axe: no serious or critical violation).
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

export function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
}

export async function accessible(page, name) {
  const results = await new AxeBuilder({ page }).analyze();
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) {
    console.error(`${name}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length} elements)`);
    for (const n of v.nodes.slice(0, 3)) console.error("   " + n.target.join(" "));
  }
  check(bad.length === 0, `${name} has no serious or critical accessibility violations`);
  console.error(`${name}: accessible (${results.passes.length} rules passed)`);
}

export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-background-networking"],
  });
}

/** A page in a fresh context: English, the Asunción time zone, downloads allowed. */
export async function newPage(browser) {
  const context = await browser.newContext({
    acceptDownloads: true,
    locale: "en-GB",
    timezoneId: "America/Asuncion",
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error: " + e.message));
  return page;
}
