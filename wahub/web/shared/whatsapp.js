/* WhatsApp's text formatting, rendered as WhatsApp renders it: *bold*, _italic_,
 * ~strikethrough~, `inline code` and ```monospace``` blocks.
 *
 * whatsappText(text) returns a DocumentFragment made only of text nodes and
 * <strong>, <em>, <s>, <code> and <pre> elements: nothing in the text is ever
 * parsed as HTML, so a message such as <img src=x onerror=...> stays text.
 *
 * A marker opens at the start of the text, or after a space or punctuation,
 * when a non-space follows it; it closes before the end, a space or
 * punctuation, after a non-space, on the same line. Markers nest
 * (*_bold italic_*), except inside code.
 */
(function (global) {
  "use strict";

  const TAGS = { "*": "strong", "_": "em", "~": "s", "`": "code" };
  const FENCE = "```";

  function isSpace(ch) {
    return ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "\u00a0";
  }

  // Around a marker: the text's edge, a space, or punctuation (not a letter or digit).
  function isEdge(ch) {
    return ch === undefined || isSpace(ch) || !/[\p{L}\p{N}]/u.test(ch);
  }

  function closing(text, mark, from) {
    for (let j = from; j < text.length; j += 1) {
      const ch = text[j];
      if (ch === "\n") {
        return -1;
      }
      if (ch === mark && !isSpace(text[j - 1]) && j > from && isEdge(text[j + 1])) {
        return j;
      }
    }
    return -1;
  }

  function inline(text, into) {
    let plain = "";
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      const tag = TAGS[ch];
      if (tag && isEdge(text[i - 1]) && text[i + 1] !== undefined && !isSpace(text[i + 1])) {
        const end = closing(text, ch, i + 1);
        if (end > i + 1) {
          if (plain) {
            into.appendChild(document.createTextNode(plain));
            plain = "";
          }
          const element = document.createElement(tag);
          const inner = text.slice(i + 1, end);
          if (tag === "code") {
            element.textContent = inner;
          } else {
            inline(inner, element);
          }
          into.appendChild(element);
          i = end + 1;
          continue;
        }
      }
      plain += ch;
      i += 1;
    }
    if (plain) {
      into.appendChild(document.createTextNode(plain));
    }
  }

  function whatsappText(text) {
    const fragment = document.createDocumentFragment();
    const source = String(text === undefined || text === null ? "" : text);
    let rest = source;
    for (;;) {
      const start = rest.indexOf(FENCE);
      const end = start < 0 ? -1 : rest.indexOf(FENCE, start + FENCE.length);
      if (start < 0 || end < 0) {
        inline(rest, fragment);
        return fragment;
      }
      inline(rest.slice(0, start), fragment);
      const block = document.createElement("pre");
      block.textContent = rest.slice(start + FENCE.length, end).replace(/^\n/, "");
      fragment.appendChild(block);
      rest = rest.slice(end + FENCE.length);
    }
  }

  global.whatsappText = whatsappText;
})(window);
