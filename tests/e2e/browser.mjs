// Launches Debian's Chromium (never a downloaded browser) with flags that keep it off the network.
// Playwright gives each launch a fresh, empty profile directory.
import { chromium } from "playwright-core";

export async function launch() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
