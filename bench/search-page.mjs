// DONNA's steps A-D in headless Chromium (Debian's), as a person runs them in the page: one
// search at the chosen size by latency in the integer engine, then a search again by latency in
// the FP32 engine from the kept steps A-B. Prints each step's seconds.
// Run through `bench/run --search [--size quick|standard|full] [--json]` (it builds dist/ first).
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../tests/e2e/serve.mjs";
import { launch } from "../tests/e2e/browser.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const size = arg("--size", "standard");
const sizes = { quick: "0", standard: "1", full: "2" };
if (!(size in sizes)) throw new Error(`--size is quick, standard or full, not ${size}`);
const json = process.argv.includes("--json");

const srv = await serve(path.join(root, "dist"));
const browser = await launch();
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(3_600_000);
  await page.goto(srv.url);
  await page.locator('[data-testid="search-run"]:enabled').waitFor();
  const run = async (objective, reused) => {
    await page.selectOption('[data-testid="search-preset"]', sizes[size]);
    await page.selectOption('[data-testid="search-objective"]', objective);
    const t0 = Date.now();
    await page.click('[data-testid="search-run"]');
    const s = page.locator(`[data-testid="search-summary"][data-reused="${reused}"][data-seconds]`);
    await s.waitFor();
    const wall = (Date.now() - t0) / 1e3;
    const steps = Object.fromEntries(JSON.parse(await s.getAttribute("data-seconds")));
    const models = await page.locator('[data-testid="search-point"]').evaluateAll((cs) => cs.map((c) => ({ accuracy: Number(c.dataset.accuracy), latency_ms: Number(c.dataset.latency) })));
    const [refAcc, refMs] = (await s.getAttribute("data-reference")).split(",").map(Number);
    return { objective, wall_s: wall, steps, tau: Number(await s.getAttribute("data-tau")), models, reference: { accuracy: refAcc, latency_ms: refMs } };
  };
  const first = await run("latency-int8", false);
  const again = await run("latency-fp32", true);
  const search_s = (again.steps["latency table"] ?? 0) + (again.steps["NSGA-II"] ?? 0);
  const out = { bench: "donna_search_chromium", size, first, again, research_search_s: search_s };
  if (json) console.log(JSON.stringify(out));
  else {
    const fmt = (r) => `${r.objective}: ${r.wall_s.toFixed(1)} s (${Object.entries(r.steps).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ")}); τ ${r.tau.toFixed(2)}; models ${r.models.map((m) => `${m.accuracy.toFixed(2)} % ${m.latency_ms.toFixed(3)} ms`).join(", ")}; reference ${r.reference.accuracy.toFixed(2)} % ${r.reference.latency_ms.toFixed(3)} ms`;
    console.log(`DONNA in Chromium, ${size} size`);
    console.log(`  steps A-D  ${fmt(first)}`);
    console.log(`  again      ${fmt(again)}`);
    console.log(`  the search itself on the kept steps A-B (latency table + NSGA-II): ${search_s.toFixed(2)} s`);
  }
} finally {
  await browser.close();
  srv.server.close();
}
