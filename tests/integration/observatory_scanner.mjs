// Runs the MDN HTTP Observatory's own scan() on each host named on stdin (a JSON list) and prints
// one JSON object per host: the scan's score and grade and every test's result, or its error.
// The package directory comes in OBSERVATORY_DIR; four scans run at a time.
import path from "node:path";
import { pathToFileURL } from "node:url";

const entry = path.join(process.env.OBSERVATORY_DIR, "node_modules", "@mdn", "mdn-http-observatory", "src", "index.js");
const { scan } = await import(pathToFileURL(entry).href);

let input = "";
for await (const chunk of process.stdin) input += chunk;
const hosts = JSON.parse(input);

async function one(hostname) {
  try {
    const result = await scan(hostname);
    const tests = {};
    for (const [name, t] of Object.entries(result.tests)) {
      tests[name] = { result: t.result, scoreModifier: t.scoreModifier, pass: t.pass };
    }
    return { hostname, score: result.scan.score, grade: result.scan.grade, tests };
  } catch (e) {
    return { hostname, error: e instanceof Error ? e.message : String(e) };
  }
}

const out = new Array(hosts.length);
let next = 0;
async function worker() {
  while (next < hosts.length) {
    const i = next++;
    out[i] = await one(hosts[i]);
  }
}
await Promise.all([worker(), worker(), worker(), worker()]);
process.stdout.write(JSON.stringify(out));
