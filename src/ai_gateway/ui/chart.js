// A bar chart drawn as plain SVG: one bar per time bucket, the largest value on the axis, and
// the first, middle and last bucket labelled. Every text goes in as a text node.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 220;
const LEFT = 64;
const RIGHT = 8;
const TOP = 12;
const BOTTOM = 26;

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) {
    node.setAttribute(attribute, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function axes(svg, largest, format) {
  const bottom = HEIGHT - BOTTOM;
  svg.append(element("line", { class: "axis", x1: LEFT, y1: bottom, x2: WIDTH - RIGHT, y2: bottom }));
  svg.append(element("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: bottom }));
  svg.append(element("text", { class: "tick", x: LEFT - 6, y: TOP + 4, "text-anchor": "end" }, format(largest)));
  svg.append(element("text", { class: "tick", x: LEFT - 6, y: bottom, "text-anchor": "end" }, format(0)));
}

function labels(svg, points, slot) {
  const shown = new Set([0, Math.floor((points.length - 1) / 2), points.length - 1]);
  for (const index of shown) {
    const x = LEFT + slot * index + slot / 2;
    const anchor = index === 0 ? "start" : index === points.length - 1 ? "end" : "middle";
    const at = index === 0 ? LEFT : index === points.length - 1 ? WIDTH - RIGHT : x;
    svg.append(element("text", { class: "tick", x: at, y: HEIGHT - 8, "text-anchor": anchor }, points[index].label));
  }
}

// points: [{label, value}], in time order. format: a value as text.
export function barChart(svg, points, format) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.dataset.points = String(points.length);
  const largest = Math.max(0, ...points.map((point) => point.value));
  axes(svg, largest, format);
  if (points.length === 0) {
    return;
  }
  if (largest === 0) {
    svg.append(element("text", { class: "empty", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "nothing in this window"));
  }
  const slot = (WIDTH - LEFT - RIGHT) / points.length;
  const gap = Math.min(4, slot * 0.2);
  const room = HEIGHT - TOP - BOTTOM;
  points.forEach((point, index) => {
    const height = largest > 0 ? (point.value / largest) * room : 0;
    const bar = element("rect", {
      class: "bar",
      x: LEFT + slot * index + gap / 2,
      y: HEIGHT - BOTTOM - height,
      width: Math.max(slot - gap, 1),
      height,
      "data-value": point.value,
    });
    bar.append(element("title", {}, `${point.label}: ${format(point.value)}`));
    svg.append(bar);
  });
  labels(svg, points, slot);
}
