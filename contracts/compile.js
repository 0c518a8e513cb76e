#!/usr/bin/env node
// Compiles contracts/src and contracts/test with the pinned solc-js into artifacts/.
//
//   node compile.js            write artifacts/<Name>.json (ABI + bytecode), committed
//   node compile.js --check    recompile into a temp dir and diff against artifacts/;
//                              exit 1 on any difference (make test runs this)
//
// The output is byte-stable: relative source names, metadata.bytecodeHash "none"
// (no IPFS hash of a metadata blob that could carry paths), sorted keys, fixed
// JSON formatting. See NOTES.md, "Byte-stable artifacts".
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const solc = require("solc");

const HERE = __dirname;
const SOURCE_DIRS = ["src", "test"];
const ARTIFACTS = path.join(HERE, "artifacts");

const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function listSources() {
  const sources = {};
  for (const dir of SOURCE_DIRS) {
    const abs = path.join(HERE, dir);
    if (!fs.existsSync(abs)) continue;
    for (const name of fs.readdirSync(abs).sort()) {
      if (!name.endsWith(".sol")) continue;
      const rel = `${dir}/${name}`;
      sources[rel] = { content: fs.readFileSync(path.join(HERE, rel), "utf8") };
    }
  }
  return sources;
}

function findImport(importPath) {
  // Only relative-to-package names are accepted, so no absolute path enters the metadata.
  for (const base of [path.join(HERE, "node_modules"), HERE]) {
    const candidate = path.join(base, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import ${importPath} not found under contracts/node_modules; run npm ci in contracts/` };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = sortKeys(value[k]);
    return out;
  }
  return value;
}

function compile() {
  const input = { language: "Solidity", sources: listSources(), settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) {
    // OpenZeppelin's own warnings are not ours to fix; show everything else.
    const file = e.sourceLocation ? e.sourceLocation.file : "";
    if (e.severity !== "error" && file.startsWith("@openzeppelin/")) continue;
    process.stderr.write(e.formattedMessage + "\n");
  }
  if (errors.length) {
    process.stderr.write(`compile failed with ${errors.length} error(s)\n`);
    process.exit(2);
  }
  const files = {};
  for (const sourceName of Object.keys(output.contracts).sort()) {
    if (!SOURCE_DIRS.some((d) => sourceName.startsWith(d + "/"))) continue;
    for (const [name, c] of Object.entries(output.contracts[sourceName])) {
      // interfaces, and libraries whose functions are all internal (inlined), have no artifact
      if (!c.evm.bytecode.object || c.abi.length === 0) continue;
      const artifact = sortKeys({
        contractName: name,
        sourceName,
        compiler: solc.version(),
        settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer },
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      });
      const sub = sourceName.startsWith("test/") ? "test" : "";
      files[path.join(sub, `${name}.json`)] = JSON.stringify(artifact, null, 2) + "\n";
    }
  }
  return files;
}

function writeAll(dir, files) {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  }
}

function listFiles(dir, prefix = "") {
  if (!fs.existsSync(dir)) return [];
  let out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) out = out.concat(listFiles(path.join(dir, e.name), rel));
    else out.push(rel);
  }
  return out.sort();
}

function check(files) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gensyn-artifacts-"));
  try {
    writeAll(tmp, files);
    const fresh = listFiles(tmp);
    const committed = listFiles(ARTIFACTS);
    const problems = [];
    for (const f of fresh) {
      if (!committed.includes(f)) problems.push(`missing from artifacts/: ${f}`);
      else if (!fs.readFileSync(path.join(tmp, f)).equals(fs.readFileSync(path.join(ARTIFACTS, f))))
        problems.push(`differs from a fresh compile: artifacts/${f}`);
    }
    for (const f of committed) if (!fresh.includes(f)) problems.push(`stale (no source): artifacts/${f}`);
    if (problems.length) {
      process.stderr.write(problems.join("\n") + "\nrun `node contracts/compile.js` and commit artifacts/\n");
      process.exit(1);
    }
    process.stdout.write(`artifacts up to date (${fresh.length} contracts, solc ${solc.version()})\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const files = compile();
if (process.argv.includes("--check")) check(files);
else {
  writeAll(ARTIFACTS, files);
  process.stdout.write(`wrote ${Object.keys(files).length} artifacts to contracts/artifacts/\n`);
}
