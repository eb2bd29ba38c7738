// Runs npm's solc (solcjs) on a standard-JSON input read from stdin and prints the standard-JSON
// output on stdout. Imports are resolved against the directories given as arguments, in order.
// The solcjs CLI is not used because it prints a banner line on stdout that breaks JSON parsing.
"use strict";
const fs = require("fs");
const path = require("path");

const [solcPath, ...includeDirs] = process.argv.slice(2);
const solc = require(solcPath);

function findImports(unitName) {
  for (const dir of includeDirs) {
    const candidate = path.join(dir, unitName);
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `not found in ${includeDirs.join(", ")}: ${unitName}` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImports }));
process.stdout.write("\n");
process.stderr.write(`solc ${solc.version()}\n`);
