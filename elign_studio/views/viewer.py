"""The 3D molecule viewer: vendored 3Dmol.js in a Panel JSComponent, atoms coloured by |F|, colour bar.

The colour bar's top is the shown frame's largest |F| (``scale="frame"``: every frame uses the whole
palette, so the final molecule reads as well as the noisy first frames) or ``fmax`` (``"fixed"``: a physical
range the user sets, comparable across frames and models; ``"chain"``: a range over the whole trajectory).
Force arrows (optional) show each atom's force vector from the surface of its sphere, 2 A long at the colour
bar's top (at most 4 A). Hovering an atom
shows its element, index and |F|; clicking two atoms measures their distance (a dashed
line with its length, kept while the frame changes); the PNG button saves the view with its title and colour bar.

Viewers of one ``group`` (the two of a side-by-side comparison) share their camera while ``link_cameras`` is
on: rotating, zooming or moving one moves the others the same way, in the browser (a page-wide registry of
each group's viewers). A click on a viewer gives it the keyboard focus, so that the group's frame player
(:class:`elign_studio.views.frame_keys.KeyedPlayer`) takes its keys.
"""

from __future__ import annotations

import param

from elign_studio.resources import ThreeDmolComponent

__all__ = ["MoleculeViewer"]


class MoleculeViewer(ThreeDmolComponent):
    """Shows ``frames[frame]``: {elements, xyz, force (|F| per atom, eV/A, null if unscored), bonds, and ``why``
    a frame is not scored when it is not}."""

    frames = param.List(default=[], doc="viewer frames of one molecule's trajectory")
    frame = param.Integer(default=0)
    fmax = param.Number(default=1.0, doc="|F| at the top of the colour bar (eV/A) unless scale is 'frame'")
    scale = param.Selector(
        default="frame",
        objects=["frame", "fixed", "chain"],
        doc="colour bar top: the frame's max |F|, fmax as set, or fmax over the chain",
    )
    color_by = param.Selector(default="force", objects=["force", "element"])
    arrows = param.Boolean(default=False, doc="draw each atom's force as an arrow (2 A at the colour bar top)")
    label = param.String(default="")
    hide_h = param.Boolean(default=False, doc="hide the hydrogens (and their bonds)")
    atom_labels = param.Selector(default="none", objects=["none", "element", "index"], doc="a label on each atom")
    style = param.Selector(
        default="ball and stick", objects=["ball and stick", "stick", "spacefill"], doc="how atoms are drawn"
    )
    group = param.String(
        default="", doc="the view these viewers belong to: their cameras link within it, its player takes their keys"
    )
    link_cameras = param.Boolean(default=True, doc="share the camera with the other viewers of the group")

    _esm = """
const ARROW = 2.0;  // force-arrow length (A) at the colour bar's top
const STYLES = {  // representation -> 3Dmol style of each atom (colour added per atom below)
  'ball and stick': { stick: { radius: 0.14 }, sphere: { scale: 0.3 } },
  'stick': { stick: { radius: 0.2 } },
  'spacefill': { sphere: { scale: 1.0 } },
};
function styled(name, colours) {  // a fresh style object with the colour options on every part
  const s = JSON.parse(JSON.stringify(STYLES[name] || STYLES['ball and stick']));
  for (const part of Object.values(s)) Object.assign(part, colours);
  return s;
}
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];  // viridis
function colour(v, vmax) {
  if (v === null || v === undefined || !isFinite(v)) return '#9e9e9e';
  const x = Math.max(0, Math.min(1, v / (vmax || 1))) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x)), f = x - i;
  const c = STOPS[i].map((a, k) => Math.round(a + f * (STOPS[i + 1][k] - a)));
  return 'rgb(' + c.join(',') + ')';
}

// The viewers of each group, page-wide (each viewer is its own component): group -> Set of {viewer, host, model}
const CAMERAS = window.elignCameras || (window.elignCameras = new Map());
function members(group) {
  if (!CAMERAS.has(group)) CAMERAS.set(group, new Set());
  return CAMERAS.get(group);
}
function sameView(a, b) { return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) < 1e-9); }

// Multisampling in a software rasteriser (SwiftShader, llvmpipe: no GPU) makes a frame ~10x slower
// (measured 175 -> 15 ms in headless Chromium), so edges are smoothed only where a GPU draws.
const SOFTWARE_GL = (() => {
  try {
    const gl = document.createElement('canvas').getContext('webgl');
    const info = gl && gl.getExtension('WEBGL_debug_renderer_info');
    const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '';
    return /swiftshader|llvmpipe|softpipe|software/i.test(name);
  } catch (e) { return false; }
})();

export function render({ model, el }) {
  const wrap = document.createElement('div');
  wrap.style.cssText = 'display:flex;flex-direction:column;width:100%;height:100%;min-height:380px';
  const title = document.createElement('div');
  title.style.cssText = 'font:13px sans-serif;padding:2px 4px;height:18px';
  const host = document.createElement('div');
  host.className = 'elign-viewer';
  host.style.cssText = 'position:relative;width:100%;height:330px;flex:1 1 auto;outline:none';
  host.tabIndex = 0;  // focusable: the frame player of its group takes the keys pressed here
  host.dataset.elignGroup = model.group;
  host.dataset.lmSuppressShortcuts = 'true';  // JupyterLab leaves the keys pressed here to the page
  host.addEventListener('pointerdown', () => host.focus({ preventScroll: true }));  // 3Dmol keeps a click's focus
  host.addEventListener('focus', () => { host.style.boxShadow = 'inset 0 0 0 2px #7aa7d8'; });
  host.addEventListener('blur', () => { host.style.boxShadow = ''; });
  const bar = document.createElement('div');
  bar.style.cssText = 'display:flex;align-items:center;gap:6px;font:12px sans-serif;padding:4px';
  const grad = document.createElement('div');
  grad.style.cssText = 'flex:1;height:12px;border:1px solid #888;background:linear-gradient(to right,' +
    STOPS.map(c => 'rgb(' + c.join(',') + ')').join(',') + ')';
  const lo = document.createElement('span'), hi = document.createElement('span');
  bar.append(document.createTextNode('|F| (eV/\u00c5)'), lo, grad, hi);
  const tools = document.createElement('div');
  tools.style.cssText = 'display:flex;align-items:center;gap:8px;font:12px sans-serif;padding:0 4px';
  const distance = document.createElement('span');
  distance.className = 'elign-distance';
  distance.textContent = 'Click two atoms to measure their distance.';
  const png = document.createElement('button');
  png.className = 'elign-png';
  png.textContent = 'PNG';
  png.title = 'Save the view with its title and colour bar as a PNG image';
  tools.append(distance, png);
  wrap.append(title, host, bar, tools);
  el.append(wrap);
  let viewer = null, zoomed = false, pending = null, picked = [];  // picked: atom indices, at most two
  let caption = '';  // what the saved image says above the view: molecule, frame, colour mode and range
  const me = { viewer: null, host: host, model: model, syncing: false };  // this viewer in its camera group
  if (model.group) members(model.group).add(me);
  function share(view) {  // this camera moved: the group's other linked, shown viewers take its view
    if (me.syncing || !model.group || !model.link_cameras) return;
    for (const other of members(model.group)) {
      if (other === me || !other.viewer || !other.model.link_cameras || other.host.offsetWidth === 0) continue;
      if (sameView(other.viewer.getView(), view)) continue;
      other.syncing = true;  // its own change callback passes the view on to no one
      try { other.viewer.setView(view); } finally { other.syncing = false; }
    }
  }
  function adopt() {  // linking turned on: this viewer takes the view of the group's first shown viewer
    const first = [...members(model.group)].find(m => m.viewer && m.host.offsetWidth > 0);
    if (!viewer || !first || first === me || !model.link_cameras) return;
    me.syncing = true;
    try { viewer.setView(first.viewer.getView()); } finally { me.syncing = false; }
  }
  function snapshot() {  // the view with its caption above and the colour bar below, as one PNG (a data URL)
    const src = viewer.getCanvas();
    const px = (v) => Math.round(v * src.width / Math.max(1, host.offsetWidth));  // CSS pixels -> canvas pixels
    const withBar = model.color_by === 'force';
    const head = px(24), foot = withBar ? px(30) : 0;
    const out = document.createElement('canvas');
    out.width = src.width;
    out.height = head + src.height + foot;
    const g = out.getContext('2d');
    g.fillStyle = 'white';
    g.fillRect(0, 0, out.width, out.height);
    g.drawImage(src, 0, head);
    g.fillStyle = 'black';
    g.textBaseline = 'middle';
    g.font = px(13) + 'px sans-serif';
    g.fillText(caption, px(6), head / 2, out.width - px(12));
    if (withBar) {
      const y = head + src.height + px(9), h = px(12), name = '|F| (eV/\u00c5)  ' + lo.textContent;
      g.font = px(12) + 'px sans-serif';
      const left = px(12) + g.measureText(name).width, right = out.width - px(12) - g.measureText(hi.textContent).width;
      const ramp = g.createLinearGradient(left, 0, right, 0);
      STOPS.forEach((c, i) => ramp.addColorStop(i / (STOPS.length - 1), 'rgb(' + c.join(',') + ')'));
      g.fillStyle = ramp;
      g.fillRect(left, y, right - left, h);
      g.strokeStyle = '#888';
      g.strokeRect(left, y, right - left, h);
      g.fillStyle = 'black';
      g.fillText(name, px(6), y + h / 2);
      g.fillText(hi.textContent, right + px(6), y + h / 2);
    }
    return out.toDataURL('image/png');
  }
  model.on('remove', () => { if (model.group) members(model.group).delete(me); });
  png.onclick = () => {
    if (!viewer) return;
    const a = document.createElement('a');
    a.href = snapshot();
    a.download = (model.label || 'molecule').replace(/[^A-Za-z0-9.-]+/g, '_') + '.png';
    a.click();
  };
  host.elignPick = (i) => {  // a click on atom i (also what tests call)
    picked = picked.length === 2 || picked[0] === i ? [i] : picked.concat([i]);
    draw(false);
  };

  function measure(fr) {  // the picked pair in this frame: a dashed line, its length on the line and below
    if (picked.some(i => i >= fr.elements.length)) picked = [];
    if (picked.length < 2) {
      distance.textContent = picked.length ? fr.elements[picked[0]] + picked[0] + ' picked: click a second atom'
        : 'Click two atoms to measure their distance.';
      return;
    }
    const [a, b] = picked.map(i => fr.xyz[i]);
    const d = Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    const p = (v) => ({ x: v[0], y: v[1], z: v[2] });
    viewer.addCylinder({ start: p(a), end: p(b), radius: 0.04, dashed: true, color: 'black', fromCap: 1, toCap: 1 });
    viewer.addLabel(d.toFixed(3) + ' \u00c5', { position: p(a.map((v, k) => (v + b[k]) / 2)), fontSize: 12,
      backgroundColor: 'white', fontColor: 'black', backgroundOpacity: 0.8, inFront: true });
    distance.textContent = 'd(' + picked.map(i => fr.elements[i] + i).join('\u2013') + ') = ' + d.toFixed(3) +
      ' \u00c5 (follows the frame)';
  }

  function draw(rezoom) {
    if (host.offsetWidth === 0) { pending = pending || rezoom; return; }  // hidden: draw when shown
    pending = null;
    if (!viewer) {
      if (!window.$3Dmol) { title.textContent = '3Dmol.js failed to load'; return; }
      viewer = window.$3Dmol.createViewer(host, { backgroundColor: 'white', antialias: !SOFTWARE_GL });
      viewer.setViewChangeCallback(share);
      me.viewer = viewer;
      host.elignViewer = viewer;  // its camera: getView() / setView() (tests read it)
    }
    viewer.removeAllModels();
    viewer.removeAllShapes();
    viewer.removeAllLabels();
    const frames = model.frames || [];
    const at = Math.max(0, Math.min(model.frame, frames.length - 1)), fr = frames[at];
    bar.style.visibility = model.color_by === 'force' ? 'visible' : 'hidden';
    if (!fr) { caption = title.textContent = model.label + ' (no molecule yet)'; viewer.render(); return; }
    const scored = fr.force.filter(v => v !== null && isFinite(v));
    const frameMax = scored.length ? Math.max(...scored) : null;
    const vmax = model.scale === 'frame' ? (frameMax || 1) : (model.fmax || 1);
    const how = { frame: 'this frame', fixed: 'fixed', chain: 'whole chain' }[model.scale];
    lo.textContent = '0'; hi.textContent = vmax.toPrecision(3) + ' (' + how + ')';
    const n = fr.elements.length;
    const atoms = fr.elements.map((e, i) => ({
      elem: e, x: fr.xyz[i][0], y: fr.xyz[i][1], z: fr.xyz[i][2], serial: i, index: i,
      bonds: [], bondOrder: [], properties: { force: fr.force[i] },
    }));
    for (const [i, j, o] of fr.bonds) {
      atoms[i].bonds.push(j); atoms[i].bondOrder.push(o);
      atoms[j].bonds.push(i); atoms[j].bondOrder.push(o);
    }
    const m = viewer.addModel();
    m.addAtoms(atoms);
    const colours = model.color_by === 'force' ? { colorfunc: (a) => colour(a.properties.force, vmax) }
      : { colorscheme: 'Jmol' };
    viewer.setStyle({}, styled(model.style, colours));
    if (model.hide_h) viewer.setStyle({ elem: 'H' }, {});  // hidden atoms take their bonds with them
    if (model.atom_labels !== 'none') {
      atoms.forEach((a, i) => {
        if (model.hide_h && a.elem === 'H') return;
        viewer.addLabel(model.atom_labels === 'element' ? a.elem : String(i), { position: { x: a.x, y: a.y, z: a.z },
          fontSize: 11, fontColor: 'black', backgroundColor: 'white', backgroundOpacity: 0.6, inFront: true });
      });
    }
    const fmaxFrame = frameMax === null ? 'not scored' + (fr.why ? ': ' + fr.why : '')
      : frameMax.toPrecision(3) + ' eV/\u00c5';
    title.textContent = model.label + '  t = ' + fr.t + '  (' + n + ' atoms, ' + fr.bonds.length +
      ' bonds, max |F| ' + fmaxFrame + ')';
    caption = model.label + '   frame ' + at + ' of ' + (frames.length - 1) + ' (t = ' + fr.t + ')   ' +
      (model.color_by === 'force' ? '|F| colour range ' + how + ': 0 to ' + vmax.toPrecision(3) + ' eV/\u00c5'
        : 'coloured by element');
    viewer.setHoverable({}, true, (atom, v) => {
      if (atom.hoverLabel) return;
      const f = atom.properties.force;
      const text = atom.elem + ' ' + atom.index + '  |F| ' + (f === null || f === undefined ? 'not scored' :
        Number(f).toPrecision(3) + ' eV/\u00c5');
      atom.hoverLabel = v.addLabel(text, { position: atom, backgroundColor: 'black', fontSize: 12,
                                           backgroundOpacity: 0.7, inFront: true });
    }, (atom, v) => { if (atom.hoverLabel) { v.removeLabel(atom.hoverLabel); delete atom.hoverLabel; } });
    if (model.arrows && fr.fvec) {  // F = -dE/dx: where each atom is pushed, ARROW A long at the bar's top
      fr.fvec.forEach((f, i) => {
        if (!f || (model.hide_h && fr.elements[i] === 'H')) return;
        const scale = ARROW / vmax, p = fr.xyz[i], norm = Math.hypot(f[0], f[1], f[2]);
        const length = Math.min(norm * scale, 2 * ARROW);  // a noisy frame's 10^4 eV/A stays on the screen
        if (length < 0.05) return;
        const u = f.map(v => v / norm), r0 = model.style === 'stick' ? 0.2 : 0.45;  // leave the atom's sphere
        const start = { x: p[0] + u[0] * r0, y: p[1] + u[1] * r0, z: p[2] + u[2] * r0 };
        const tip = { x: start.x + u[0] * length, y: start.y + u[1] * length, z: start.z + u[2] * length };
        viewer.addArrow({ start: start, end: tip, radius: 0.08, color: colour(fr.force[i], vmax), mid: 0.75 });
      });
    }
    viewer.setClickable({}, true, (atom) => host.elignPick(atom.index));
    measure(fr);
    if (rezoom || !zoomed) { viewer.zoomTo(); zoomed = true; }
    viewer.render();
  }
  let shown = null;  // the final frame's geometry: new forces on the same chain keep the camera
  model.on('frames', () => {
    const last = (model.frames || []).slice(-1)[0];
    const key = last ? JSON.stringify([model.frames.length, last.elements, last.xyz]) : null;
    if (key !== shown) picked = [];  // another molecule: its atoms are other atoms
    draw(key !== shown);
    shown = key;
  });
  model.on('frame', () => draw(false));
  model.on('fmax', () => draw(false));
  model.on('scale', () => draw(false));
  model.on('label', () => draw(false));  // the title follows a new selection's label
  model.on('color_by', () => draw(false));
  model.on('arrows', () => draw(false));
  model.on('hide_h', () => draw(false));
  model.on('atom_labels', () => draw(false));
  model.on('style', () => draw(false));
  model.on('link_cameras', adopt);
  model.on('after_layout', () => {
    if (pending !== null) draw(pending);
    else if (viewer) { viewer.resize(); viewer.render(); }
  });
  setTimeout(() => draw(true), 50);
}
"""
