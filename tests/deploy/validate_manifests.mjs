// Validates rendered Kubernetes manifests offline against the Kubernetes API schemas.
//
//   node tests/deploy/validate_manifests.mjs MANIFESTS.json
//
// MANIFESTS.json is a JSON array of objects (the test converts `helm template` output to it).
// Two checks per object, both offline:
//  1. kubernetes-models' generated validators (types, required fields, enums, formats) for the
//     core API and, through @kubernetes-models/prometheus-operator, for ServiceMonitor,
//     PodMonitor and PrometheusRule;
//  2. unknown fields: kubernetes-models' validators accept any extra key, so a misspelt field
//     (`periodSecond`) would pass and be dropped by the API server. The same package's type
//     declarations (.d.ts) list every field of every type; this script walks them and reports
//     any key the API does not define.
// Modules come from $ONEDOMAIN_TOOLS_DIR/node_modules (scripts/install-helm.sh installs them).
// Exit 0 when every object is valid, 1 otherwise (each error on its own line).

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const toolsDir = process.env.ONEDOMAIN_TOOLS_DIR ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..", ".tools");
const nodeModules = path.join(toolsDir, "node_modules");

function modelBase(apiVersion) {
  if (apiVersion === "v1") return path.join(nodeModules, "kubernetes-models", "v1");
  const [group, version] = apiVersion.split("/");
  if (group === "monitoring.coreos.com") {
    return path.join(nodeModules, "@kubernetes-models", "prometheus-operator", group, version);
  }
  return path.join(nodeModules, "kubernetes-models", group, version);
}

// ---- a small parser for the TypeScript type declarations of kubernetes-models ----------------

function tokenize(text) {
  const tokens = [];
  const re = /\s+|\/\*[\s\S]*?\*\/|\/\/[^\n]*|("(?:[^"\\]|\\.)*")|([A-Za-z_$][\w$]*)|(-?\d+(?:\.\d+)?)|(=>|[{}<>\[\]()|&:;?,.=])/y;
  let m;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    m = re.exec(text);
    if (!m) throw new Error(`cannot tokenize at ${JSON.stringify(text.slice(pos, pos + 40))}`);
    pos = re.lastIndex;
    if (m[1]) tokens.push({ t: "str", v: JSON.parse(m[1]) });
    else if (m[2]) tokens.push({ t: "id", v: m[2] });
    else if (m[3]) tokens.push({ t: "num", v: m[3] });
    else if (m[4]) tokens.push({ t: "p", v: m[4] });
  }
  return tokens;
}

class TypeParser {
  constructor(tokens, i = 0) { this.k = tokens; this.i = i; }
  peek(v) { const t = this.k[this.i]; return t && (v === undefined || t.v === v) ? t : null; }
  eat(v) {
    const t = this.k[this.i];
    if (!t || (v !== undefined && t.v !== v)) {
      throw new Error(`expected ${v} at token ${this.i}, got ${t ? t.v : "end"}`);
    }
    this.i++;
    return t;
  }
  type() {
    const members = [this.postfix()];
    while (this.peek("|") || this.peek("&")) { this.i++; members.push(this.postfix()); }
    return members.length === 1 ? members[0] : { kind: "union", of: members };
  }
  postfix() {
    let t = this.primary();
    while (this.peek("[") && this.k[this.i + 1] && this.k[this.i + 1].v === "]") {
      this.i += 2;
      t = { kind: "array", of: t };
    }
    // Indexed access such as IDeployment["apiVersion"]: a leaf.
    while (this.peek("[")) { this.eat("["); this.type(); this.eat("]"); t = { kind: "leaf" }; }
    return t;
  }
  primary() {
    const t = this.eat();
    if (t.t === "p" && t.v === "(") { const inner = this.type(); this.eat(")"); return inner; }
    if (t.t === "p" && t.v === "{") { this.i--; return this.object(); }
    if (t.t === "str" || t.t === "num") return { kind: "leaf" };
    if (t.t === "id") {
      if (t.v === "Array" && this.peek("<")) {
        this.eat("<"); const of = this.type(); this.eat(">");
        return { kind: "array", of };
      }
      if (["string", "number", "boolean", "any", "unknown", "null", "undefined", "object",
           "true", "false", "never"].includes(t.v)) {
        return { kind: "leaf" };
      }
      let name = t.v;
      while (this.peek(".")) { this.eat("."); name += "." + this.eat().v; }
      if (this.peek("<")) {  // generic reference: skip its arguments
        let depth = 0;
        do { const x = this.eat(); if (x.v === "<") depth++; if (x.v === ">") depth--; } while (depth > 0);
        return { kind: "leaf" };
      }
      return { kind: "ref", name };
    }
    throw new Error(`unexpected token ${t.v}`);
  }
  object() {
    this.eat("{");
    const props = new Map();
    let index = null;
    while (!this.peek("}")) {
      if (this.peek("[")) {  // [key: string]: T
        this.eat("["); this.eat(); this.eat(":"); this.type(); this.eat("]"); this.eat(":");
        index = this.type();
      } else {
        const nameTok = this.eat();
        if (this.peek("?")) this.eat("?");
        if (this.peek("(")) {  // a method signature: skip to the end of the member
          let depth = 0;
          while (!(depth === 0 && (this.peek(";") || this.peek("}")))) {
            const x = this.eat();
            if ("({[<".includes(x.v)) depth++;
            if (")}]>".includes(x.v)) depth--;
          }
        } else {
          this.eat(":");
          props.set(String(nameTok.v), this.type());
        }
      }
      if (this.peek(";") || this.peek(",")) this.i++;
    }
    this.eat("}");
    return { kind: "object", props, index };
  }
}

const files = new Map();  // absolute .d.ts path -> parsed declarations

function resolveImport(fromFile, spec) {
  if (spec.startsWith(".")) {
    return path.resolve(path.dirname(fromFile), spec.replace(/\.js$/, "") + ".d.ts");
  }
  if (spec === "@kubernetes-models/base") return null;
  for (const candidate of [path.join(nodeModules, spec + ".d.ts"),
                           path.join(nodeModules, spec, "index.d.ts")]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

function parseFile(file) {
  if (files.has(file)) return files.get(file);
  const text = fs.readFileSync(file, "utf8");
  const decl = { file, types: new Map(), imports: new Map(), aliases: new Map(), bases: new Map() };
  files.set(file, decl);
  for (const m of text.matchAll(/import \{([^}]*)\} from "([^"]+)";/g)) {
    const target = resolveImport(file, m[2]);
    for (const part of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      const [exported, local] = part.split(/\s+as\s+/);
      decl.imports.set(local || exported, { file: target, name: exported });
    }
  }
  for (const m of text.matchAll(/export type \{([^}]*)\};/g)) {
    for (const part of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      const [local, exported] = part.split(/\s+as\s+/);
      if (exported) decl.aliases.set(exported, local);
    }
  }
  for (const m of text.matchAll(/export interface (\w+)(?:\s+extends\s+([^{]+))?\s*(?=\{)/g)) {
    const tokens = tokenize(text.slice(m.index + m[0].length, findBodyEnd(text, m.index + m[0].length)));
    const t = new TypeParser(tokens).object();
    const bases = (m[2] || "").split(",").map((s) => s.trim()).filter((s) => s && s !== "TypeMeta");
    if (bases.length) decl.bases.set(m[1], bases);
    decl.types.set(m[1], t);
  }
  for (const m of text.matchAll(/export type (\w+)(?:<[^=]*>)?\s*=\s*/g)) {
    const end = text.indexOf(";\n", m.index + m[0].length);
    const body = text.slice(m.index + m[0].length, end);
    try {
      decl.types.set(m[1], new TypeParser(tokenize(body)).type());
    } catch {
      decl.types.set(m[1], { kind: "leaf" });
    }
  }
  return decl;
}

function findBodyEnd(text, start) {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    if (text[i] === "{") depth++;
    if (text[i] === "}") { depth--; if (depth === 0) return i + 1; }
  }
  return text.length;
}

// Resolves a name in a file to { type, decl }; an interface's inherited fields are merged in
// (when a base cannot be resolved, the type is left open: unknown keys are not reported).
function lookup(decl, name, seen = new Set()) {
  const key = decl.file + "#" + name;
  if (seen.has(key)) return null;
  seen.add(key);
  if (decl.aliases.has(name)) return lookup(decl, decl.aliases.get(name), seen);
  if (decl.types.has(name)) {
    let type = decl.types.get(name);
    let open = false;
    for (const base of decl.bases.get(name) || []) {
      const b = lookup(decl, base);
      if (!b || b.type.kind !== "object" || b.open) { open = true; continue; }
      // Inherited fields keep their own file for resolving their types.
      const props = new Map(type.props);
      for (const [k, v] of b.type.props) if (!props.has(k)) props.set(k, { kind: "in", type: v, decl: b.decl });
      type = { ...type, props };
    }
    return { type, decl, open };
  }
  const imp = decl.imports.get(name);
  if (imp && imp.file && fs.existsSync(imp.file)) return lookup(parseFile(imp.file), imp.name, seen);
  return null;
}

function isPlainObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

function checkUnknown(value, type, decl, where, errors, depth = 0) {
  if (depth > 64 || value === null || value === undefined) return;
  switch (type.kind) {
    case "leaf":
      return;
    case "in":  // a field inherited from an interface declared in another file
      return checkUnknown(value, type.type, type.decl, where, errors, depth + 1);
    case "ref": {
      const found = lookup(decl, type.name);
      if (!found) return;  // unresolvable (e.g. from @kubernetes-models/base): not checked
      if (found.open && found.type.kind === "object") {
        const relaxed = { ...found.type, index: found.type.index || { kind: "leaf" } };
        return checkUnknown(value, relaxed, found.decl, where, errors, depth + 1);
      }
      return checkUnknown(value, found.type, found.decl, where, errors, depth + 1);
    }
    case "array":
      if (Array.isArray(value)) {
        value.forEach((item, i) => checkUnknown(item, type.of, decl, `${where}[${i}]`, errors, depth + 1));
      }
      return;
    case "union": {
      // Follow the single object-shaped alternative, if the value is an object.
      if (!isPlainObject(value)) return;
      const objects = type.of
        .map((t) => (t.kind === "ref" ? lookup(decl, t.name) : { type: t, decl }))
        .filter((r) => r && r.type.kind === "object");
      if (objects.length === 1) checkUnknown(value, objects[0].type, objects[0].decl, where, errors, depth + 1);
      return;
    }
    case "object": {
      if (!isPlainObject(value)) return;
      for (const [k, v] of Object.entries(value)) {
        const child = `${where}.${k}`;
        if (type.props.has(k)) {
          checkUnknown(v, type.props.get(k), decl, child, errors, depth + 1);
        } else if (type.index) {
          checkUnknown(v, type.index, decl, child, errors, depth + 1);
        } else {
          const known = [...type.props.keys()].sort().join(", ");
          errors.push(`${child}: unknown field "${k}" (known: ${known})`);
        }
      }
      return;
    }
    default:
      return;
  }
}

// ---- main ------------------------------------------------------------------------------------

async function validate(obj, label) {
  const errors = [];
  if (!isPlainObject(obj) || !obj.apiVersion || !obj.kind) {
    return [`${label}: not a Kubernetes object (apiVersion and kind required)`];
  }
  const base = modelBase(obj.apiVersion);
  const jsFile = path.join(base, `${obj.kind}.js`);
  const dtsFile = path.join(base, `${obj.kind}.d.ts`);
  if (!fs.existsSync(jsFile)) {
    return [`${label}: no schema for ${obj.apiVersion} ${obj.kind} (looked for ${jsFile})`];
  }
  const mod = await import(pathToFileURL(jsFile).href);
  const Model = mod[obj.kind];
  try {
    new Model(obj).validate();
  } catch (e) {
    for (const line of String(e.message).split(/,\s(?=data)/)) errors.push(`${label}: ${line}`);
  }
  const decl = parseFile(dtsFile);
  const found = lookup(decl, `I${obj.kind}`);
  if (!found) {
    errors.push(`${label}: no type declaration I${obj.kind} in ${dtsFile}`);
  } else {
    const unknown = [];
    checkUnknown(obj, found.type, found.decl, "", unknown);
    for (const u of unknown) errors.push(`${label}: ${u.replace(/^\./, "")}`);
  }
  return errors;
}

async function main() {
  const input = process.argv[2];
  if (!input) {
    console.error("usage: validate_manifests.mjs MANIFESTS.json");
    process.exit(2);
  }
  if (!fs.existsSync(path.join(nodeModules, "kubernetes-models", "package.json"))) {
    console.error(`kubernetes-models not found in ${nodeModules}: run scripts/install-helm.sh`);
    process.exit(2);
  }
  const objects = JSON.parse(fs.readFileSync(input, "utf8"));
  let failures = 0;
  for (const obj of objects) {
    const label = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
    const errors = await validate(obj, label);
    if (errors.length) {
      failures++;
      for (const e of errors) console.log(`INVALID ${e}`);
    } else {
      console.log(`valid ${label} (${obj.apiVersion})`);
    }
  }
  console.log(`${objects.length - failures} valid, ${failures} invalid`);
  process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(2); });
