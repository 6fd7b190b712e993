// A markdown artifact rendered as Prefect's UI shows it: headings, paragraphs, emphasis,
// inline code and code blocks, lists, quotes, rules, pipe tables and links. Anyone who can
// run a task writes these, so the page is built from DOM nodes and text nodes (h(), from
// app.js), never from HTML: a tag in the text shows as text, and a link is made only to an
// http, https or mailto address (a javascript: URL stays text).
"use strict";

const MD_SAFE_URL = /^(https?:\/\/|mailto:)/i;

const MD_MAX_QUOTE_DEPTH = 8;  // deeper quotes show as text: no recursion without bound
const MD_MAX_CHARS = 20000;  // a longer artifact is shown as written, not rendered

function renderMarkdown(text, depth = 0) {
  if (String(text).length > MD_MAX_CHARS) {
    return h("div", {}, h("p", {class: "muted"}, "over " + MD_MAX_CHARS +
      " characters: shown as written"), h("pre", {class: "artifact"}, String(text)));
  }
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  const out = h("div", {class: "markdown"});
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    const fence = line.match(/^\s*(```|~~~)/);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) body.push(lines[i]);
      i++;  // the closing fence (or the end)
      out.append(h("pre", {}, h("code", {}, body.join("\n"))));
      continue;
    }
    const heading = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      out.append(h("h" + heading[1].length, {}, mdInline(heading[2])));
      i++;
      continue;
    }
    if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) { out.append(h("hr", {})); i++; continue; }
    if (/^\s*>/.test(line) && depth < MD_MAX_QUOTE_DEPTH) {
      const quoted = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i++) quoted.push(lines[i].replace(/^\s*>\s?/, ""));
      out.append(h("blockquote", {}, renderMarkdown(quoted.join("\n"), depth + 1)));
      continue;
    }
    const item = mdListItem(line);
    if (item) {
      const list = h(item.ordered ? "ol" : "ul", {});
      for (let next = item; next && next.ordered === item.ordered; next = i < lines.length ? mdListItem(lines[i]) : null) {
        list.append(h("li", {}, mdInline(next.text)));
        i++;
      }
      out.append(list);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && mdIsTableRule(lines[i + 1])) {
      const head = mdCells(line);
      const rows = [];
      for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) rows.push(mdCells(lines[i]));
      out.append(h("table", {class: "md-table"},
        h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, mdInline(c))))),
        h("tbody", {}, rows.map((r) => h("tr", {}, head.map((_, k) => h("td", {}, mdInline(r[k] || "")))))))
      );
      continue;
    }
    const para = [line.trim()];  // at least this line: the loop always moves on
    for (i++; i < lines.length && lines[i].trim() && !mdStartsBlock(lines, i); i++) para.push(lines[i].trim());
    out.append(h("p", {}, mdInline(para.join(" "))));
  }
  return out;
}

function mdListItem(line) {
  const m = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
  return m ? {ordered: !m[1], text: m[3]} : null;
}

function mdIsTableRule(line) {
  return /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(line);
}

function mdCells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

// Whether line i starts a block other than a paragraph (which then ends before it).
function mdStartsBlock(lines, i) {
  const line = lines[i];
  return /^\s*(```|~~~|#{1,6}\s)/.test(line) || /^\s*>/.test(line) || mdListItem(line) !== null ||
    /^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line) ||
    (line.includes("|") && i + 1 < lines.length && mdIsTableRule(lines[i + 1]));
}

// Inline spans, in one pass: `code`, [text](url), **bold** / __bold__, *em* / _em_ (the
// underscores only at a word's edges: window.__name stays as written).
// Each span is bounded, so that a paragraph of unclosed ones costs a bounded scan per
// character, not one to its end.
const MD_INLINE = /`([^`]{1,1000})`|\[([^\]]{1,300})\]\(([^)\s]{1,500})\)|\*\*([^*]{1,1000})\*\*|\b__([^_]{1,1000})__\b|\*([^*]{1,1000})\*|\b_([^_]{1,1000})_\b/g;

function mdInline(text) {
  const nodes = [];
  const re = new RegExp(MD_INLINE.source, "g");
  let at = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m.index > at) nodes.push(text.slice(at, m.index));
    at = m.index + m[0].length;
    if (m[1] !== undefined) nodes.push(h("code", {}, m[1]));
    else if (m[2] !== undefined) {
      nodes.push(MD_SAFE_URL.test(m[3]) ?
        h("a", {href: m[3], rel: "noopener noreferrer nofollow", target: "_blank"}, mdInline(m[2])) :
        m[2] + " (" + m[3] + ")");
    } else if (m[4] !== undefined || m[5] !== undefined) nodes.push(h("strong", {}, mdInline(m[4] || m[5])));
    else nodes.push(h("em", {}, mdInline(m[6] || m[7])));
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}
