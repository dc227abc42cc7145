// Renders /api/v1/openapi.json: every operation with its parameters, body and
// answers, then the shared schemas. Text is always set as text, never as HTML.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function schemaBlock(schema) {
  if (!schema) return element("p", "(no JSON body)");
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const paragraph = element("p");
    const link = element("a", name);
    link.href = `#schema-${name}`;
    paragraph.append("Schema ", link);
    return paragraph;
  }
  return element("pre", JSON.stringify(schema, null, 2));
}

function parameterTable(parameters) {
  const table = element("table");
  const head = table.insertRow();
  for (const label of ["name", "in", "required", "schema", "description"]) head.append(element("th", label));
  for (const parameter of parameters) {
    const row = table.insertRow();
    row.insertCell().append(element("code", parameter.name));
    row.insertCell().textContent = parameter.in;
    row.insertCell().textContent = parameter.required ? "yes" : "no";
    row.insertCell().append(element("code", JSON.stringify(parameter.schema)));
    row.insertCell().textContent = parameter.description || "";
  }
  return table;
}

function contentBlocks(container, content) {
  for (const [type, media] of Object.entries(content || {})) {
    container.append(element("p", type, "content-type"), schemaBlock(media.schema));
  }
}

function operationSection(path, method, operation) {
  const id = operation.operationId;
  const section = element("section", undefined, "operation");
  section.id = `op-${id}`;
  const title = element("h3");
  title.append(element("span", method.toUpperCase(), `method ${method}`), path);
  section.append(title, element("p", operation.summary));
  if (operation.description) section.append(element("p", operation.description));
  if (Array.isArray(operation.security) && operation.security.length === 0) {
    section.append(element("p", "No token needed.", "public"));
  }
  if (operation.parameters) section.append(element("h4", "Parameters"), parameterTable(operation.parameters));
  if (operation.requestBody) {
    section.append(element("h4", operation.requestBody.required ? "Body" : "Body (optional)"));
    contentBlocks(section, operation.requestBody.content);
  }
  section.append(element("h4", "Answers"));
  for (const [status, answer] of Object.entries(operation.responses)) {
    section.append(element("p", `${status}: ${answer.description}`));
    contentBlocks(section, answer.content);
  }
  return section;
}

function render(spec) {
  document.title = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("summary").textContent = spec.info.description || "";
  const contents = element("ul");
  const operations = document.getElementById("operations");
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, item[method]]);
    }
  }
  for (const [tag, entries] of byTag) {
    operations.append(element("h2", tag));
    for (const [path, method, operation] of entries) {
      operations.append(operationSection(path, method, operation));
      const link = element("a", `${method.toUpperCase()} ${path}`);
      link.href = `#op-${operation.operationId}`;
      const entry = element("li");
      entry.append(link);
      contents.append(entry);
    }
  }
  document.getElementById("contents").append(contents);
  const schemas = document.getElementById("schemas");
  schemas.append(element("h2", "Schemas"));
  for (const [name, schema] of Object.entries(spec.components.schemas || {})) {
    const heading = element("h3", name);
    heading.id = `schema-${name}`;
    schemas.append(heading, element("pre", JSON.stringify(schema, null, 2)));
  }
}

async function main() {
  try {
    const response = await fetch("/api/v1/openapi.json");
    if (!response.ok) throw new Error(`/api/v1/openapi.json answered ${response.status}`);
    render(await response.json());
  } catch (problem) {
    const summary = document.getElementById("summary");
    summary.textContent = `The API's description could not be read: ${problem.message}`;
    summary.className = "error";
  }
}

main();
