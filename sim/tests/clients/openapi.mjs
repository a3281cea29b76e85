// Checks the GitHub simulator's answers against GitHub's published OpenAPI description
// (@octokit/openapi, installed in testdata/ by scripts/ensure-testdata).
//
// Usage: node openapi.mjs <answers.json>
// where answers.json is [{"operation": "<operationId>", "status": 200, "body": <JSON or null>}].
// Prints one line per violation (operation, status, JSON pointer, what is wrong) and exits 1 if
// there is any; an operation or status the description does not list is a violation too.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "../../../testdata/package.json"));
const Ajv = require("ajv");
const addFormats = require("ajv-formats");
const spec = require("@octokit/openapi/generated/api.github.com.json");

const SPEC_ID = "https://conveyor.invalid/github-openapi";
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: SPEC_ID, components: spec.components });

// Every operation by its id.
const operations = new Map();
for (const [path, item] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(item)) {
    if (op && op.operationId) operations.set(op.operationId, { method, path, op });
  }
}

// Local references point into the description.
const rebased = (schema) =>
  JSON.parse(JSON.stringify(schema), (key, value) =>
    key === "$ref" && typeof value === "string" && value.startsWith("#/")
      ? SPEC_ID + value
      : value,
  );

const answers = JSON.parse(readFileSync(process.argv[2], "utf8"));
const compiled = new Map();
let violations = 0;
const report = (a, what) => {
  violations += 1;
  console.log(`${a.operation} ${a.status}: ${what}`);
};
for (const a of answers) {
  const found = operations.get(a.operation);
  if (!found) {
    report(a, "no such operation in GitHub's description");
    continue;
  }
  let response = found.op.responses[String(a.status)];
  if (response?.$ref) {
    response = spec.components.responses[response.$ref.split("/").pop()];
  }
  if (!response && a.status >= 400) {
    // GitHub answers errors its description does not list for every operation (a 404 for an
    // unknown workflow, a 422 for a refused dispatch); they are still its error bodies.
    response = { content: { "application/json": { schema: { $ref: "#/components/schemas/basic-error" } } } };
  }
  if (!response) {
    report(a, `GitHub's description lists no ${a.status} answer (it lists ${Object.keys(found.op.responses).join(", ")})`);
    continue;
  }
  const schema = response.content?.["application/json"]?.schema;
  if (!schema) {
    if (a.body !== null && a.body !== undefined && a.body !== "") {
      report(a, "a body where the description has none");
    }
    continue;
  }
  const key = `${a.operation} ${a.status}`;
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rebased(schema)));
  const validate = compiled.get(key);
  if (!validate(a.body)) {
    for (const e of validate.errors) {
      report(a, `${e.instancePath || "/"} ${e.message}${e.params && Object.keys(e.params).length ? " " + JSON.stringify(e.params) : ""}`);
    }
  }
}
console.log(`${answers.length} answers checked, ${violations} violations`);
process.exit(violations === 0 ? 0 : 1);
