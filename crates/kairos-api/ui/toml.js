// A small TOML writer (TOML 1.0) for JSON documents: the job page shows a job as a `[[jobs]]`
// entry that can be pasted into a jobs file for `kairos apply`. No DOM, no dependencies.
//
// Rules: `null` values are left out (TOML has no null; a missing field means the same to the
// API). Scalars and arrays that are not all objects are written as `key = value` before a
// table's sub-tables; an object is a sub-table (`[a.b]`), an array of objects an array of
// tables (`[[a.b]]`), an empty object `{}`. Inside a value (an array of scalars or of mixed
// types, or deeper) objects are inline tables (`{ a = 1, b = "x" }`). Strings are basic
// strings, multi-line (`"""`) when they hold a line feed so a script stays readable.

const BARE = /^[A-Za-z0-9_-]+$/;
// Lone surrogates cannot be written in TOML (nor be sent by the API): shown as U+FFFD.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const SHORT_ESCAPES = { '\\': '\\\\', '"': '\\"', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r' };

function isTable(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function escapeChar(c) {
  return SHORT_ESCAPES[c] || `\\u${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/** A basic string on one line: `"…"`, with `\ " \b \t \n \f \r` and control characters escaped. */
export function tomlString(s) {
  return `"${String(s).replace(LONE_SURROGATE, '\uFFFD').replace(/[\\"\u0000-\u001F\u007F]/g, escapeChar)}"`;
}

/**
 * A string with line feeds as a multi-line basic string: the line feeds are written as they
 * are (the one right after the opening `"""` is dropped by parsers), everything else is
 * escaped as in `tomlString` (quotes too, so no run of three can end the string early).
 */
function multilineString(s) {
  const body = String(s).replace(LONE_SURROGATE, '\uFFFD').replace(/[\\"\u0000-\u0009\u000B-\u001F\u007F]/g, escapeChar);
  return `"""\n${body}"""`;
}

/** A key: bare when it can be, else a quoted basic string. */
export function tomlKey(k) {
  return BARE.test(k) ? k : tomlString(k);
}

function number(n) {
  if (Number.isNaN(n)) return 'nan';
  if (n === Infinity) return 'inf';
  if (n === -Infinity) return '-inf';
  // JavaScript writes `1e+21` and `1.5e-7`, which TOML reads as floats; `Object.is(n, -0)`
  // is written `0`.
  return String(n);
}

/** A value in value position: scalar, inline array or inline table. */
function inline(v, multiline) {
  switch (typeof v) {
    case 'string':
      return multiline && v.includes('\n') ? multilineString(v) : tomlString(v);
    case 'number':
      return number(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return String(v);
    default:
      break;
  }
  if (Array.isArray(v)) {
    const items = v.filter((x) => x !== null && x !== undefined).map((x) => inline(x, false));
    return items.length ? `[${items.join(', ')}]` : '[]';
  }
  if (isTable(v)) {
    const pairs = entries(v).map(([k, x]) => `${tomlKey(k)} = ${inline(x, false)}`);
    return pairs.length ? `{ ${pairs.join(', ')} }` : '{}';
  }
  throw new TypeError(`cannot write a ${typeof v} in TOML`);
}

/** The entries of an object without its null (and undefined) values. */
function entries(obj) {
  return Object.entries(obj).filter(([, v]) => v !== null && v !== undefined);
}

/** Whether `v` is written as an array of tables: a non-empty array of objects only. */
function isTableArray(v) {
  if (!Array.isArray(v)) return false;
  const items = v.filter((x) => x !== null && x !== undefined);
  return items.length > 0 && items.every(isTable);
}

/** Whether `v` is written as a sub-table (`[path]`) rather than in value position. */
function isSubTable(v) {
  return isTable(v) && entries(v).length > 0;
}

/**
 * Writes the body of the table at `path` (keys already quoted): its `key = value` lines, then
 * its sub-tables and arrays of tables in the order of the document.
 */
function writeTable(out, path, obj) {
  const later = [];
  for (const [k, v] of entries(obj)) {
    if (isSubTable(v) || isTableArray(v)) later.push([k, v]);
    else out.push(`${tomlKey(k)} = ${inline(v, true)}`);
  }
  for (const [k, v] of later) {
    const sub = [...path, tomlKey(k)];
    if (isTableArray(v)) {
      for (const item of v) {
        if (item === null || item === undefined) continue;
        header(out, `[[${sub.join('.')}]]`);
        writeTable(out, sub, item);
      }
    } else {
      // A table of sub-tables only needs no header of its own: `[a.b.c]` makes `a.b`.
      if (entries(v).some(([, x]) => !isSubTable(x) && !isTableArray(x))) header(out, `[${sub.join('.')}]`);
      writeTable(out, sub, v);
    }
  }
}

/** A table header, after a blank line unless it follows a header with nothing under it. */
function header(out, line) {
  if (out.length && out.headerAt !== out.length - 1) out.push('');
  out.push(line);
  out.headerAt = out.length - 1;
}

/** A TOML document of the object `doc` (its top-level table), ending with a line feed. */
export function toToml(doc) {
  if (!isTable(doc)) throw new TypeError('a TOML document is a table');
  const out = [];
  writeTable(out, [], doc);
  return out.length ? `${out.join('\n')}\n` : '';
}

/** A job document as one `[[jobs]]` entry of a jobs file (`kairos apply -f`). */
export function jobToml(job) {
  return toToml({ jobs: [job] });
}
