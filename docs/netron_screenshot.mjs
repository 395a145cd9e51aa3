// How docs/netron-prefill.png was made (a one-off check that Netron loads a compiled prefill graph and shows the
// ai.glass nodes): `glass-onnx inspect DIR --netron --port 8081` in one shell, then, with playwright-core installed
// (npm install playwright-core) and Debian's chromium:  node docs/netron_screenshot.mjs http://localhost:8081/ out.png AccumulateNeuronStats
// The clicks are coordinates for a 1500x1300 viewport: Netron's cookie notice, then the first Find result.
import { chromium } from 'playwright-core';
const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const page = await browser.newPage({ viewport: { width: 1500, height: 1300 } });
await page.goto(url);
await page.waitForTimeout(1500);
await page.mouse.click(750, 761);
await page.waitForTimeout(5000);
const query = process.argv[4];
if (query) {
  await page.keyboard.press('Control+F');
  await page.waitForTimeout(800);
  await page.keyboard.type(query);
  await page.waitForTimeout(1500);
  await page.mouse.click(1162, 110);
  await page.waitForTimeout(2500);
}
await page.screenshot({ path: out });
await browser.close();
