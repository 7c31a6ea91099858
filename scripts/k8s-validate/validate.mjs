#!/usr/bin/env node
// Validates Kubernetes objects against the schemas of the Kubernetes API (kubernetes-models,
// generated from the Kubernetes OpenAPI spec), Istio's CRDs (@kubernetes-models/istio) and the
// Prometheus operator's CRDs (@kubernetes-models/prometheus-operator).
//
//   node scripts/k8s-validate/validate.mjs FILE.yaml...    # "-" reads stdin (e.g. kustomize output)
//
// Every YAML document must be an object with apiVersion and kind of a known model; an unknown
// apiVersion/kind is an error (never skipped). Prints one line per object ("ok Kind/name" or
// "INVALID ...") and exits 1 if any object is invalid or unknown, 2 on usage/read errors.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const families = [
  // [test on the API group, package prefix]
  [(g) => g.endsWith(".istio.io"), "@kubernetes-models/istio"],
  [(g) => g === "monitoring.coreos.com", "@kubernetes-models/prometheus-operator"],
  [() => true, "kubernetes-models"],
];

async function modelFor(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  const pkg = families.find(([test]) => test(group))[1];
  const modPath = group === "" ? `${pkg}/${version}` : `${pkg}/${group}/${version}`;
  let mod;
  try {
    mod = await import(modPath);
  } catch (e) {
    throw new Error(`no schema for apiVersion ${apiVersion} (${modPath}): ${e.code ?? e.message}`);
  }
  const Model = mod[kind];
  if (typeof Model !== "function") {
    throw new Error(`no schema for kind ${kind} in ${apiVersion}`);
  }
  return Model;
}

async function main(args) {
  if (args.length === 0) {
    console.error("usage: validate.mjs FILE.yaml... (- for stdin)");
    return 2;
  }
  let bad = 0;
  let n = 0;
  for (const file of args) {
    let text;
    try {
      text = readFileSync(file === "-" ? 0 : file, "utf8");
    } catch (e) {
      console.error(`${file}: ${e.message}`);
      return 2;
    }
    const docs = parseAllDocuments(text);
    for (const [i, doc] of docs.entries()) {
      const where = `${file}#${i}`;
      if (doc.errors.length > 0) {
        console.log(`INVALID ${where}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
        bad++;
        continue;
      }
      const obj = doc.toJS();
      if (obj === null || obj === undefined) continue;
      n++;
      const name = `${obj.kind ?? "?"}/${obj.metadata?.name ?? "?"}`;
      if (typeof obj !== "object" || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
        console.log(`INVALID ${where}: not a Kubernetes object (apiVersion and kind required)`);
        bad++;
        continue;
      }
      try {
        const Model = await modelFor(obj.apiVersion, obj.kind);
        new Model(obj).validate();
        console.log(`ok ${obj.apiVersion} ${name} (${where})`);
      } catch (e) {
        console.log(`INVALID ${obj.apiVersion} ${name} (${where}): ${e.message}`);
        bad++;
      }
    }
  }
  console.log(`${n} objects, ${bad} invalid`);
  return bad > 0 || n === 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
