#!/usr/bin/env node
// Parse and bind KQL queries against declared tables with Microsoft's Kusto parser (npm
// @kusto/language-service-next, the C# Kusto.Language compiled to JavaScript): offline, no cluster.
// Why: ARM validates a scheduled query rule's query only when the rule is created, against tables that
// may not exist yet; binding here proves every table, column and function name before any `up`.
//
//   stdin:  {"tables": {"Table": {"Column": "string", ...}, ...}, "queries": [{"name": "...", "text": "..."}]}
//   stdout: {"results": [{"name": "...", "tables": ["Table", ...], "errors": [{"message", "code", "start", "end",
//            "line", "column", "excerpt"}]}]}
// `tables`: the declared tables the query reads, as the binder resolved them (not a text search), sorted.
//
// One process binds every query (loading the parser costs about a second). Only error-severity
// diagnostics are reported: warnings (e.g. performance hints) do not fail a deployment.
// Exit status: 0 when every query binds, 1 when any has an error, 2 on bad input.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const packageDir = process.env.KUSTO_LANGUAGE_MODULE ||
  join(__dirname, "..", ".tools", "node_modules", "@kusto", "language-service-next");
// The package is a Bridge.NET build: `bridge.js` (the .NET runtime shim) defines the global `Bridge`, then
// Kusto.Language.Bridge.js defines the global `Kusto` namespace.
require(join(packageDir, "bridge.js"));
require(join(packageDir, "Kusto.Language.Bridge.js"));
/* global Kusto, Bridge */

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// The scalar types a Log Analytics table column can have (Azure Monitor's table reference uses these).
const TYPES = new Set(["bool", "datetime", "dynamic", "guid", "int", "long", "real", "string", "timespan", "decimal"]);

function globals(tables) {
  const symbols = Kusto.Language.Symbols;
  const members = Object.entries(tables).map(([table, columns]) => {
    if (!NAME.test(table)) throw new Error(`table name ${JSON.stringify(table)} is not a plain identifier`);
    const schema = Object.entries(columns).map(([column, type]) => {
      if (!NAME.test(column)) throw new Error(`${table}: column name ${JSON.stringify(column)} is not a plain identifier`);
      if (!TYPES.has(type)) throw new Error(`${table}.${column}: unknown type ${JSON.stringify(type)}`);
      return `${column}: ${type}`;
    });
    const symbol = new symbols.TableSymbol.$ctor7(table, `(${schema.join(", ")})`, null);
    // The schema parser silently drops a column it cannot read (a keyword such as `first`): refuse instead.
    const got = Bridge.toArray(symbol.Columns).map((c) => `${c.Name}: ${c.Type.Name}`);
    if (got.join(", ") !== schema.join(", ")) {
      const lost = schema.filter((c) => !got.includes(c));
      throw new Error(`${table}: the parser did not take column(s) ${lost.join(", ")}`);
    }
    return symbol;
  });
  // isOpen=false: a name that is not declared is an error, not an unknown open-schema table.
  const database = new symbols.DatabaseSymbol.$ctor1("workspace", members, false);
  return { state: Kusto.Language.GlobalState.Default.WithDatabase(database), declared: new Set(members) };
}

function position(text, offset) {
  const before = text.slice(0, offset).split("\n");
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

function tablesRead(code, declared) {
  const names = new Set();
  Kusto.Language.Syntax.SyntaxElement.WalkNodes(code.Syntax, (node) => {
    const symbol = node.ReferencedSymbol;
    if (symbol && declared.has(symbol)) names.add(symbol.Name);
  });
  return [...names].sort();
}

function bind(query, { state, declared }) {
  const code = Kusto.Language.KustoCode.ParseAndAnalyze(query.text, state);
  const errors = Bridge.toArray(code.GetDiagnostics())
    .filter((d) => d.Severity === Kusto.Language.DiagnosticSeverity.Error)
    .map((d) => ({ message: d.Message, code: d.Code, start: d.Start, end: d.End,
                   ...position(query.text, d.Start), excerpt: query.text.slice(d.Start, d.End) }));
  return { name: query.name, tables: tablesRead(code, declared), errors };
}

function main() {
  let input;
  try {
    input = JSON.parse(readFileSync(0, "utf8"));
    if (typeof input.tables !== "object" || !Array.isArray(input.queries)) throw new Error("need {tables: {...}, queries: [...]}");
  } catch (e) {
    console.error(`kusto_bind: bad input: ${e.message}`);
    return 2;
  }
  let workspace;
  try {
    workspace = globals(input.tables);
  } catch (e) {
    console.error(`kusto_bind: bad schema: ${e.message}`);
    return 2;
  }
  const results = input.queries.map((q) => bind(q, workspace));
  process.stdout.write(JSON.stringify({ results }) + "\n");
  return results.some((r) => r.errors.length > 0) ? 1 : 0;
}

process.exitCode = main();
