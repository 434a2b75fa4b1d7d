// Drives the listing page in Debian's headless Chromium (playwright-core,
// no browser download) for the end-to-end tests:
//   node test/page.mjs '{"url": "...#token=...", "screenshot": "out.png", "width": 390}'
// Prints what a person would see, as one JSON object.

import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: options.width ?? 1100, height: options.height ?? 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

  const settle = async () => {
    await page.waitForFunction(() => !document.body.hasAttribute("aria-busy")
      && (document.querySelector("#patients > *") || document.getElementById("message").checkVisibility()), null, { timeout: 15000 });
  };
  const seen = async () => page.evaluate(() => ({
    patients: [...document.querySelectorAll(".patient")].map((p) => ({
      name: p.querySelector("h2").textContent,
      studies: [...p.querySelectorAll("tr.study")].map((r) => [...r.cells].map((c) => c.textContent)),
    })),
    message: document.getElementById("message").checkVisibility() ? document.getElementById("message").textContent : null,
    tokenForm: document.getElementById("token-form").checkVisibility(),
    page: document.getElementById("page").textContent,
    next: !document.getElementById("next").disabled,
    back: !document.getElementById("back").disabled,
    who: document.getElementById("who").textContent,
    search: document.querySelector("input[type=search]") !== null,
    empty: document.querySelector("#patients .none")?.textContent ?? null,
    overflows: document.documentElement.scrollWidth > window.innerWidth,
    url: location.href,
  }));

  await page.goto(options.url);
  await settle();
  const first = await seen();
  if (options.screenshot) await page.screenshot({ path: options.screenshot, fullPage: true });
  let searched = null;
  if (options.search !== undefined) {
    await page.fill("#search", options.search);
    await page.click("#search-form button");
    await page.waitForFunction(() => document.getElementById("page").textContent === "Page 1" && !document.body.hasAttribute("aria-busy"));
    await settle();
    searched = await seen();
  }
  let next = null;
  let back = null;
  if (first.next && options.search === undefined) {
    await page.click("#next");
    await settle();
    next = await seen();
    await page.click("#back");
    await settle();
    back = await seen();
  }
  console.log(JSON.stringify({ first, searched, next, back, errors }));
} finally {
  await browser.close();
}
