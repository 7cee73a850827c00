// Acceptance 4 of the training issue, in the tab: EfficientNet-Lite0 W4A8 per-channel QAT,
// distilled from FP32 on the 40 calibration samples (tests/aimet/efficientnet_lite0/calib40.npy,
// uploaded as your own training data), batch 2, lr 1e-4, scored by the logits' SQNR against FP32
// on the 10 bundled photos (uploaded as test photos): what `qplay train` measures natively.
// Prints the result and the wall time. Run after `trunk build --release`:
//   node bench/tab-train.mjs [EPOCHS]
import path from "node:path";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { serve } from "../tests/e2e/serve.mjs";
import { launch } from "../tests/e2e/browser.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const epochs = process.argv[2] ?? "10";
const srv = await serve(path.join(root, "dist"));
const browser = await launch();
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(3_600_000);
  await page.goto(srv.url);
  await page.click('[data-testid="model-sample-efficientnet_lite0"]');
  await page.locator('[data-testid="model-name"]:has-text("EfficientNet-Lite0")').waitFor();
  const photos = fs.readdirSync(path.join(root, "assets/images")).sort().map((f) => path.join(root, "assets/images", f));
  await page.setInputFiles('[data-testid="test-files"]', photos);
  await page.setInputFiles('[data-testid="train-files"]', path.join(root, "tests/aimet/efficientnet_lite0/calib40.npy"));
  await page.locator('[data-testid="train-data"]:has-text("Trains on your 1 files")').waitFor();
  await page.selectOption('[data-testid="train-mode"]', "qat");
  await page.selectOption('[data-testid="train-bits"]', "4/8");
  await page.check('[data-testid="train-per-channel"]');
  await page.fill('[data-testid="train-epochs"]', epochs);
  await page.dispatchEvent('[data-testid="train-epochs"]', "change");
  await page.selectOption('[data-testid="train-lr"]', "0.0001");
  await page.selectOption('[data-testid="train-batch"]', "2");
  const t0 = Date.now();
  await page.click('[data-testid="train-run"]');
  await page.locator('[data-testid="train-eta"]').waitFor();
  const summary = page.locator('[data-testid="train-summary"]');
  await summary.waitFor();
  const s = await summary.evaluate((e) => ({ before: Number(e.dataset.before), after: Number(e.dataset.after), stop: e.dataset.stop }));
  console.log(JSON.stringify({ pass: "qat_lite0_w4a8_pc_tab", epochs: Number(epochs), before_db: s.before, after_db: s.after, stop: s.stop, seconds: (Date.now() - t0) / 1e3 }));
  console.log(await summary.textContent());
} finally {
  await browser.close();
  srv.server.close();
}
