/* The delivery ticks WhatsApp shows under a sent message, as SVG icons:
 * tickIcon("queued") is a clock, "sent" one check, "delivered" and "read" two
 * (the page colours read ones blue), "failed" and "refused" a warning sign.
 * An unknown status gets the clock.
 */
(function (global) {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHECK = "M1.5 8.6 4.9 12 11.6 4.6";
  const CHECK_SECOND = "M7.6 11.2 8.4 12 15.1 4.6";
  const WARNING = ["M8 1.8 15 14.2H1Z", "M8 6v4", "M8 11.8v.4"];
  const PATHS = {
    queued: ["M8 2.2a5.8 5.8 0 1 0 0 11.6A5.8 5.8 0 0 0 8 2.2Z", "M8 4.8V8l2.2 1.6"],
    sent: [CHECK],
    delivered: [CHECK, CHECK_SECOND],
    read: [CHECK, CHECK_SECOND],
    failed: WARNING,
    refused: WARNING,
  };

  function tickIcon(status) {
    const icon = document.createElementNS(SVG_NS, "svg");
    icon.setAttribute("viewBox", "0 0 16 16");
    icon.setAttribute("aria-hidden", "true");
    icon.setAttribute("focusable", "false");
    for (const d of PATHS[status] || PATHS.queued) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      icon.append(path);
    }
    return icon;
  }

  global.tickIcon = tickIcon;
})(window);
