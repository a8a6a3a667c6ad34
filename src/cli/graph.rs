//! `graph`: a Flow's steps as a picture, with each step's phase, attempts and duration when a
//! Run is drawn. Pure: a [`Graph`] is built from a Flow (and a Run's status), laid out in
//! layers (each step one row below its furthest parent), and written as SVG, Graphviz DOT,
//! Mermaid or plain text; PNG is the SVG rasterized ([`png`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::api::{Flow, ForeachStatus, Run, StepPhase, StepStatus};

/// What a step is, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// Fans out over a list: the steps after it run once per item.
    Foreach,
    /// Runs once per item of an enclosing foreach.
    ForeachBody,
    /// Joins branches or a foreach.
    Join,
    /// A multi-node gang of this many nodes.
    MultiNode(i32),
}

/// How a step's box is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shade {
    /// A Flow drawn without a Run.
    Declared,
    NotRun,
    Pending,
    Running,
    Succeeded,
    Failed,
    Aborted,
    Reused,
}

impl Shade {
    fn of(status: Option<&StepStatus>) -> Self {
        let Some(status) = status else {
            return Shade::NotRun;
        };
        if status.reused_from.is_some() {
            return Shade::Reused;
        }
        match status.phase {
            None => Shade::NotRun,
            Some(StepPhase::Pending) => Shade::Pending,
            Some(StepPhase::Running) => Shade::Running,
            Some(StepPhase::Succeeded) => Shade::Succeeded,
            Some(StepPhase::Failed) => Shade::Failed,
            Some(StepPhase::Aborted) => Shade::Aborted,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Shade::Declared => "step",
            Shade::NotRun => "not run",
            Shade::Pending => "Pending",
            Shade::Running => "Running",
            Shade::Succeeded => "Succeeded",
            Shade::Failed => "Failed",
            Shade::Aborted => "Aborted",
            Shade::Reused => "Reused",
        }
    }

    /// (fill, stroke, text) colours.
    fn colours(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Shade::Declared => ("#ffffff", "#455a64", "#37474f"),
            Shade::NotRun => ("#ffffff", "#9e9e9e", "#616161"),
            Shade::Pending => ("#fff3e0", "#ef6c00", "#e65100"),
            Shade::Running => ("#e3f2fd", "#1565c0", "#0d47a1"),
            Shade::Succeeded => ("#e8f5e9", "#2e7d32", "#1b5e20"),
            Shade::Failed => ("#ffebee", "#c62828", "#b71c1c"),
            Shade::Aborted => ("#eeeeee", "#616161", "#424242"),
            Shade::Reused => ("#f3e5f5", "#6a1b9a", "#4a148c"),
        }
    }
}

/// One step as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub kind: Kind,
    pub shade: Shade,
    pub attempts: Option<i32>,
    pub duration: Option<String>,
    /// For a foreach: `done/total` of its tasks.
    pub tasks: Option<String>,
    /// The Run a reused step's results come from.
    pub reused_from: Option<String>,
    /// What runs (the image), shown when no Run is drawn.
    pub detail: Option<String>,
    /// Why a step failed or waits.
    pub reason: Option<String>,
}

/// An arrow between two steps; `caught` for a `catch` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub caught: bool,
}

/// A Flow's graph, with a Run's progress when one is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub title: String,
    pub subtitle: Option<String>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// The graph of a Flow, and of one of its Runs when given.
pub fn build(flow: &Flow, run: Option<&Run>) -> Graph {
    let steps = &flow.spec.steps;
    let status = run.and_then(|r| r.status.as_ref());
    let by_name: BTreeMap<&str, &StepStatus> = status
        .map(|s| s.steps.iter().map(|st| (st.name.as_str(), st)).collect())
        .unwrap_or_default();
    let foreach: BTreeMap<&str, &ForeachStatus> = status
        .map(|s| s.foreach.iter().map(|f| (f.step.as_str(), f)).collect())
        .unwrap_or_default();
    let body = foreach_bodies(flow);
    let nodes = steps
        .iter()
        .map(|step| {
            let seen = by_name.get(step.name.as_str()).copied();
            let kind = if let Some(parallel) = &step.parallel {
                Kind::MultiNode(parallel.num_nodes)
            } else if step.foreach.is_some() {
                Kind::Foreach
            } else if step.join {
                Kind::Join
            } else if body.contains(step.name.as_str()) {
                Kind::ForeachBody
            } else {
                Kind::Plain
            };
            Node {
                name: step.name.clone(),
                kind,
                shade: if run.is_some() {
                    Shade::of(seen)
                } else {
                    Shade::Declared
                },
                attempts: seen.and_then(|s| s.attempts),
                duration: seen.and_then(duration),
                tasks: foreach
                    .get(step.name.as_str())
                    .map(|f| format!("{}/{} tasks", f.succeeded + f.failed + f.aborted, f.total)),
                reused_from: seen.and_then(|s| s.reused_from.clone()),
                reason: seen.and_then(|s| s.reason.clone()),
                detail: run
                    .is_none()
                    .then(|| step.image.clone().or_else(|| step.command.first().cloned()))
                    .flatten(),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for step in steps {
        for next in &step.next {
            edges.push(Edge {
                from: step.name.clone(),
                to: next.clone(),
                caught: false,
            });
        }
        if let Some(target) = step.catch.as_ref().and_then(|c| c.next.clone()) {
            edges.push(Edge {
                from: step.name.clone(),
                to: target,
                caught: true,
            });
        }
    }
    let flow_name = flow.metadata.name.clone().unwrap_or_default();
    let (title, subtitle) = match run {
        Some(run) => {
            let phase = status
                .and_then(|s| s.phase)
                .map_or("Pending".to_owned(), |p| format!("{p:?}"));
            (
                format!(
                    "Run {} of Flow {flow_name}",
                    run.metadata.name.clone().unwrap_or_default()
                ),
                Some(match status.and_then(|s| s.message.clone()) {
                    Some(message) => format!("{phase}: {message}"),
                    None => phase,
                }),
            )
        }
        None => (format!("Flow {flow_name}"), None),
    };
    Graph {
        title,
        subtitle,
        nodes,
        edges,
    }
}

/// Steps that run once per foreach item: reachable from a foreach step's `next` before its
/// join (counting nested foreaches and their joins).
fn foreach_bodies(flow: &Flow) -> BTreeSet<&str> {
    let steps: BTreeMap<&str, &crate::api::Step> = flow
        .spec
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut body = BTreeSet::new();
    for split in flow.spec.steps.iter().filter(|s| s.foreach.is_some()) {
        // (step, open foreaches)
        let mut stack: Vec<(&str, usize)> = split.next.iter().map(|n| (n.as_str(), 1)).collect();
        let mut seen = BTreeSet::new();
        while let Some((name, depth)) = stack.pop() {
            let Some(step) = steps.get(name) else {
                continue;
            };
            let depth = if step.join { depth - 1 } else { depth };
            if depth == 0 || !seen.insert((name, depth)) {
                continue;
            }
            body.insert(name);
            let depth = if step.foreach.is_some() {
                depth + 1
            } else {
                depth
            };
            stack.extend(step.next.iter().map(|n| (n.as_str(), depth)));
        }
    }
    body
}

fn duration(status: &StepStatus) -> Option<String> {
    let start = status.start_time.as_ref()?.0;
    let end = status.completion_time.as_ref()?.0;
    let seconds = end.duration_since(start).as_secs();
    Some(human_duration(seconds.max(0)))
}

/// `42s`, `3m 05s`, `2h 01m`.
pub fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Where everything goes: each step's layer (its longest distance from a step without
/// parents) and its slot in the layer, the slots each layer has, and for each edge the slots
/// it passes through. An edge that skips layers gets a slot of its own in each layer it
/// crosses, so it runs beside the steps there instead of through them.
pub struct Arrangement {
    pub places: BTreeMap<String, (usize, usize)>,
    pub slots: BTreeMap<usize, usize>,
    /// Per edge (in `Graph::edges` order): the (layer, slot) of each layer it crosses.
    pub routes: Vec<Vec<(usize, usize)>>,
}

/// Each step's (layer, slot): see [`Arrangement`].
pub fn layout(graph: &Graph) -> BTreeMap<String, (usize, usize)> {
    arrange(graph).places
}

/// Lays the graph out in layers, ordering each layer by the mean slot of its parents so that
/// edges cross little (one barycentric pass from the top).
pub fn arrange(graph: &Graph) -> Arrangement {
    let names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let known = |name: &str| names.contains(&name);
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for edge in &graph.edges {
        if known(&edge.to) && known(&edge.from) {
            parents
                .entry(edge.to.as_str())
                .or_default()
                .push(edge.from.as_str());
        }
    }
    // Longest path, bounded by the number of steps (a cycle, which validation refuses, cannot
    // loop forever here).
    let mut layer: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    for _ in 0..names.len() {
        let mut changed = false;
        for name in &names {
            let want = parents
                .get(name)
                .into_iter()
                .flatten()
                .map(|p| layer.get(p).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0)
                .min(names.len());
            if layer.get(name) != Some(&want) {
                layer.insert(name, want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Vertices: the steps, then one per layer an edge crosses. A vertex's parents, for the
    // ordering: a step's are its parents' vertices (or the last crossing of a long edge).
    struct Vertex {
        layer: usize,
        order: usize,
        parents: Vec<usize>,
    }
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut vertices: Vec<Vertex> = names
        .iter()
        .enumerate()
        .map(|(order, name)| Vertex {
            layer: layer.get(name).copied().unwrap_or(0),
            order,
            parents: Vec::new(),
        })
        .collect();
    let mut crossings: Vec<Vec<usize>> = Vec::with_capacity(graph.edges.len());
    for edge in &graph.edges {
        let (Some(&from), Some(&to)) = (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        else {
            crossings.push(Vec::new());
            continue;
        };
        let (top, bottom) = (vertices[from].layer, vertices[to].layer);
        let mut previous = from;
        let mut route = Vec::new();
        for level in top + 1..bottom {
            let id = vertices.len();
            vertices.push(Vertex {
                layer: level,
                order: names.len() + id,
                parents: vec![previous],
            });
            route.push(id);
            previous = id;
        }
        vertices[to].parents.push(previous);
        crossings.push(route);
    }
    let depth = vertices.iter().map(|v| v.layer).max().unwrap_or(0);
    let mut slot_of: Vec<(usize, usize)> = vec![(0, 0); vertices.len()];
    let mut position: Vec<Option<f64>> = vec![None; vertices.len()];
    let mut slots = BTreeMap::new();
    for level in 0..=depth {
        let mut row: Vec<(usize, f64, usize)> = vertices
            .iter()
            .enumerate()
            .filter(|(_, v)| v.layer == level)
            .map(|(id, v)| {
                let ps: Vec<f64> = v.parents.iter().filter_map(|p| position[*p]).collect();
                let mean = if ps.is_empty() {
                    v.order as f64
                } else {
                    ps.iter().sum::<f64>() / ps.len() as f64
                };
                (id, mean, v.order)
            })
            .collect();
        row.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
        let width = row.len();
        slots.insert(level, width);
        for (slot, (id, _, _)) in row.into_iter().enumerate() {
            // Centred: positions in units of a column, the row's middle at 0.
            position[id] = Some(slot as f64 - (width as f64 - 1.0) / 2.0);
            slot_of[id] = (level, slot);
        }
    }
    Arrangement {
        places: names
            .iter()
            .enumerate()
            .map(|(id, name)| ((*name).to_owned(), slot_of[id]))
            .collect(),
        slots,
        routes: crossings
            .into_iter()
            .map(|route| route.into_iter().map(|id| slot_of[id]).collect())
            .collect(),
    }
}

const BOX_WIDTH: f64 = 210.0;
const BOX_HEIGHT: f64 = 66.0;
const COLUMN: f64 = 250.0;
const ROW: f64 = 116.0;
const MARGIN: f64 = 30.0;
const HEADER: f64 = 86.0;
const LEGEND: f64 = 60.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The graph as a standalone SVG document.
pub fn svg(graph: &Graph) -> String {
    let arrangement = arrange(graph);
    let places = &arrangement.places;
    let rows = &arrangement.slots;
    let widest = rows.values().copied().max().unwrap_or(1).max(1);
    let layers = rows.len().max(1);
    let width = (widest as f64 * COLUMN).max(560.0) + 2.0 * MARGIN;
    let drawn_run = graph.subtitle.is_some();
    let legend = if drawn_run { LEGEND } else { 0.0 };
    let height = HEADER + (layers as f64 - 1.0) * ROW + BOX_HEIGHT + 20.0 + legend + MARGIN;
    let at = |(layer, index): (usize, usize)| -> (f64, f64) {
        let count = rows.get(&layer).copied().unwrap_or(1) as f64;
        let x = width / 2.0 + (index as f64 - (count - 1.0) / 2.0) * COLUMN;
        let y = HEADER + layer as f64 * ROW + BOX_HEIGHT / 2.0;
        (x, y)
    };
    let centre = |name: &str| at(places.get(name).copied().unwrap_or((0, 0)));
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{FONT}">
<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#757575"/></marker>
<marker id="arrow-caught" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c62828"/></marker>
<filter id="shadow" x="-10%" y="-10%" width="130%" height="140%"><feDropShadow dx="0" dy="2" stdDeviation="2" flood-color="#000000" flood-opacity="0.18"/></filter>
</defs>
<rect width="100%" height="100%" fill="#fafafa"/>
<text x="{MARGIN}" y="34" font-size="20" font-weight="bold" fill="#212121">{}</text>
"##,
        escape(&graph.title)
    );
    if let Some(subtitle) = &graph.subtitle {
        let _ = writeln!(
            out,
            r##"<text x="{MARGIN}" y="56" font-size="13" fill="#616161">{}</text>"##,
            escape(&truncate(subtitle, 110))
        );
    }
    for (number, edge) in graph.edges.iter().enumerate() {
        if !places.contains_key(&edge.from) || !places.contains_key(&edge.to) {
            continue;
        }
        let (x1, y1) = centre(&edge.from);
        let (x2, y2) = centre(&edge.to);
        // Down from the parent, through the slot of each layer the edge crosses, into the
        // child: a smooth curve between layers, straight through a crossed layer.
        let mut path = format!("M {x1} {}", y1 + BOX_HEIGHT / 2.0);
        let mut from = (x1, y1 + BOX_HEIGHT / 2.0);
        let route = arrangement.routes.get(number).cloned().unwrap_or_default();
        for slot in route {
            let (x, y) = at(slot);
            let (top, bottom) = (y - BOX_HEIGHT / 2.0, y + BOX_HEIGHT / 2.0);
            let bend = (top - from.1) / 2.0;
            let _ = write!(
                path,
                " C {} {}, {x} {}, {x} {top} L {x} {bottom}",
                from.0,
                from.1 + bend,
                top - bend
            );
            from = (x, bottom);
        }
        let end_y = y2 - BOX_HEIGHT / 2.0 - 2.0;
        let bend = ((end_y - from.1) / 2.0).max(20.0);
        let _ = write!(
            path,
            " C {} {}, {x2} {}, {x2} {end_y}",
            from.0,
            from.1 + bend,
            end_y - bend
        );
        let (colour, dash, marker) = if edge.caught {
            ("#c62828", r#" stroke-dasharray="6 4""#, "arrow-caught")
        } else {
            ("#757575", "", "arrow")
        };
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.8"{dash} marker-end="url(#{marker})"/>"#,
        );
    }
    for node in &graph.nodes {
        let (x, y) = centre(&node.name);
        let (left, top) = (x - BOX_WIDTH / 2.0, y - BOX_HEIGHT / 2.0);
        let (fill, stroke, ink) = node.shade.colours();
        let dash = if node.shade == Shade::NotRun {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let stacked = matches!(node.kind, Kind::ForeachBody | Kind::MultiNode(_));
        let _ = writeln!(
            out,
            r#"<g class="step" data-step="{}" data-phase="{}">"#,
            escape(&node.name),
            node.shade.label()
        );
        if stacked {
            // A stack of cards: one box per foreach item or node.
            for offset in [8.0, 4.0] {
                let _ = writeln!(
                    out,
                    r#"<rect x="{}" y="{}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="10" fill="{fill}" stroke="{stroke}" stroke-width="1.2"{dash}/>"#,
                    left + offset,
                    top - offset
                );
            }
        }
        let stroke_width = if node.shade == Shade::Failed {
            3.0
        } else {
            2.0
        };
        let _ = writeln!(
            out,
            r#"<rect x="{left}" y="{top}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="10" fill="{fill}" stroke="{stroke}" stroke-width="{stroke_width}"{dash} filter="url(#shadow)"/>"#
        );
        // A coloured band on the left says the phase at a glance.
        let _ = writeln!(
            out,
            r#"<path d="M {left} {} a 10 10 0 0 1 10 -10 h 2 v {BOX_HEIGHT} h -2 a 10 10 0 0 1 -10 -10 z" fill="{stroke}"/>"#,
            top + 10.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="15" font-weight="bold" fill="#212121">{}</text>"##,
            left + 20.0,
            top + 22.0,
            escape(&truncate(&node.name, 20))
        );
        if let Some(badge) = badge(&node.kind) {
            let badge_width = 9.0 + 6.5 * badge.chars().count() as f64;
            let _ = writeln!(
                out,
                r##"<rect x="{}" y="{}" width="{badge_width}" height="17" rx="8.5" fill="#ffffff" stroke="{stroke}" stroke-width="1"/><text x="{}" y="{}" font-size="10.5" fill="{ink}" text-anchor="middle">{}</text>"##,
                left + BOX_WIDTH - badge_width - 8.0,
                top + 8.0,
                left + BOX_WIDTH - badge_width / 2.0 - 8.0,
                top + 20.5,
                escape(badge.as_str())
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12.5" fill="{ink}">{}</text>"#,
            left + 20.0,
            top + 41.0,
            escape(&truncate(&first_line(node), 30))
        );
        if let Some(second) = second_line(node) {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" font-size="11.5" fill="#616161">{}</text>"##,
                left + 20.0,
                top + 57.0,
                escape(&truncate(&second, 30))
            );
        }
        out.push_str("</g>\n");
    }
    // Legend: the phases that appear (a Flow alone has none).
    let shown: Vec<Shade> = if !drawn_run {
        Vec::new()
    } else {
        let mut shades: Vec<Shade> = Vec::new();
        for node in &graph.nodes {
            if !shades.contains(&node.shade) {
                shades.push(node.shade);
            }
        }
        shades
    };
    let mut x = MARGIN;
    let y = height - MARGIN - 10.0;
    for shade in shown {
        let (fill, stroke, _) = shade.colours();
        let _ = writeln!(
            out,
            r##"<rect x="{x}" y="{}" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}" stroke-width="2"/><text x="{}" y="{y}" font-size="12" fill="#424242">{}</text>"##,
            y - 11.0,
            x + 20.0,
            shade.label()
        );
        x += 32.0 + 7.0 * shade.label().len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

fn badge(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Plain => None,
        Kind::Foreach => Some("foreach".into()),
        Kind::ForeachBody => Some("per item".into()),
        Kind::Join => Some("join".into()),
        Kind::MultiNode(nodes) => Some(format!("{nodes} nodes")),
    }
}

fn first_line(node: &Node) -> String {
    if node.shade == Shade::Declared
        && let Some(detail) = &node.detail
    {
        return detail.clone();
    }
    let mut parts = vec![node.shade.label().to_owned()];
    if let Some(attempts) = node.attempts.filter(|a| *a > 1) {
        parts.push(format!("{attempts} attempts"));
    }
    if let Some(duration) = &node.duration {
        parts.push(duration.clone());
    }
    parts.join(" · ")
}

fn second_line(node: &Node) -> Option<String> {
    if let Some(run) = &node.reused_from {
        return Some(format!("from {run}"));
    }
    node.tasks.clone().or_else(|| {
        node.reason
            .as_ref()
            .filter(|_| matches!(node.shade, Shade::Failed | Shade::Pending))
            .map(|reason| reason.lines().next().unwrap_or_default().to_owned())
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Graphviz DOT, coloured like the SVG.
pub fn dot(graph: &Graph) -> String {
    let mut out = format!(
        "digraph flow {{\n  label=\"{}\";\n  labelloc=t;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
        graph.title.replace('"', "'")
    );
    for node in &graph.nodes {
        let (fill, stroke, _) = node.shade.colours();
        let mut label = node.name.clone();
        if let Some(badge) = badge(&node.kind) {
            label.push_str(&format!(" [{badge}]"));
        }
        label.push_str(&format!("\\n{}", first_line(node)));
        if let Some(second) = second_line(node) {
            label.push_str(&format!("\\n{second}"));
        }
        let peripheries = if matches!(node.kind, Kind::ForeachBody | Kind::MultiNode(_)) {
            2
        } else {
            1
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\", fillcolor=\"{fill}\", color=\"{stroke}\", peripheries={peripheries}];",
            node.name,
            label.replace('"', "'")
        );
    }
    for edge in &graph.edges {
        let style = if edge.caught {
            " [style=dashed, color=\"#c62828\", label=\"catch\"]"
        } else {
            ""
        };
        let _ = writeln!(out, "  \"{}\" -> \"{}\"{style};", edge.from, edge.to);
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart (renders in GitHub and GitLab Markdown).
pub fn mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart TD\n");
    for node in &graph.nodes {
        let mut label = node.name.clone();
        if let Some(badge) = badge(&node.kind) {
            label.push_str(&format!(" ({badge})"));
        }
        label.push_str(&format!("<br/>{}", first_line(node)));
        if let Some(second) = second_line(node) {
            label.push_str(&format!("<br/>{second}"));
        }
        let (open, close) = match node.kind {
            Kind::Foreach => ("{{", "}}"),
            Kind::ForeachBody | Kind::MultiNode(_) => ("[[", "]]"),
            Kind::Join => ("([", "])"),
            Kind::Plain => ("[", "]"),
        };
        let _ = writeln!(
            out,
            "  {}{open}\"{}\"{close}:::{}",
            node.name,
            label.replace('"', "'"),
            class(node.shade)
        );
    }
    for edge in &graph.edges {
        let arrow = if edge.caught { "-. catch .->" } else { "-->" };
        let _ = writeln!(out, "  {} {arrow} {}", edge.from, edge.to);
    }
    for shade in [
        Shade::Declared,
        Shade::NotRun,
        Shade::Pending,
        Shade::Running,
        Shade::Succeeded,
        Shade::Failed,
        Shade::Aborted,
        Shade::Reused,
    ] {
        let (fill, stroke, ink) = shade.colours();
        let _ = writeln!(
            out,
            "  classDef {} fill:{fill},stroke:{stroke},color:{ink}",
            class(shade)
        );
    }
    out
}

fn class(shade: Shade) -> &'static str {
    match shade {
        Shade::Declared => "step",
        Shade::NotRun => "notrun",
        Shade::Pending => "pending",
        Shade::Running => "running",
        Shade::Succeeded => "succeeded",
        Shade::Failed => "failed",
        Shade::Aborted => "aborted",
        Shade::Reused => "reused",
    }
}

/// Plain text: one line per step in layer order, with what comes next.
pub fn text(graph: &Graph) -> String {
    let places = layout(graph);
    let mut nodes: Vec<&Node> = graph.nodes.iter().collect();
    nodes.sort_by_key(|n| places.get(&n.name).copied().unwrap_or_default());
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4);
    let mut out = format!("{}\n", graph.title);
    if let Some(subtitle) = &graph.subtitle {
        let _ = writeln!(out, "{subtitle}");
    }
    for node in nodes {
        let next: Vec<String> = graph
            .edges
            .iter()
            .filter(|e| e.from == node.name)
            .map(|e| {
                if e.caught {
                    format!("{} (catch)", e.to)
                } else {
                    e.to.clone()
                }
            })
            .collect();
        let mut line = format!("{:width$}  {:<28}", node.name, first_line(node));
        if let Some(badge) = badge(&node.kind) {
            line.push_str(&format!("  [{badge}]"));
        }
        if let Some(second) = second_line(node) {
            line.push_str(&format!("  {second}"));
        }
        if !next.is_empty() {
            line.push_str(&format!("  -> {}", next.join(", ")));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Why a PNG could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("the SVG could not be read back: {0}")]
    Parse(String),
    #[error("the picture is too large to rasterize ({0}x{1} pixels)")]
    Size(u32, u32),
    #[error("encoding the PNG: {0}")]
    Encode(String),
}

/// The SVG rasterized at twice its size (crisp on high-density screens), with the system's
/// fonts. Without any font installed, boxes and arrows are drawn but not their text.
pub fn png(svg: &str) -> Result<Vec<u8>, PngError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The SVG asks for DejaVu Sans, Helvetica, Arial, then sans-serif: point the generic family
    // at a font that exists here.
    let family = ["DejaVu Sans", "Liberation Sans", "Helvetica", "Arial"]
        .into_iter()
        .find(|wanted| {
            fonts
                .faces()
                .any(|face| face.families.iter().any(|(name, _)| name == wanted))
        })
        .map(str::to_owned)
        .or_else(|| {
            fonts
                .faces()
                .next()
                .and_then(|face| face.families.first().map(|(name, _)| name.clone()))
        });
    if let Some(family) = family {
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| PngError::Parse(e.to_string()))?;
    let size = tree.size().to_int_size();
    let (width, height) = (size.width() * 2, size.height() * 2);
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or(PngError::Size(width, height))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(2.0, 2.0),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| PngError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FlowSpec, RunPhase, RunSpec, RunStatus};

    fn flow(yaml: &str) -> Flow {
        let spec: FlowSpec = serde_norway::from_str(yaml).unwrap();
        Flow::new("demo", spec)
    }

    fn foreach_flow() -> Flow {
        flow(
            "steps:\n- {name: start, next: [each], foreach: {}}\n- {name: each, next: [gather]}\n- {name: gather, join: true, next: [train]}\n- {name: train, next: [end], parallel: {numNodes: 2}}\n- {name: end}\n",
        )
    }

    fn run_with(steps: &[(&str, StepPhase)]) -> Run {
        let mut run = Run::new(
            "demo-abc12",
            RunSpec {
                flow_ref: crate::api::FlowRef {
                    name: "demo".into(),
                },
                parameters: Default::default(),
                stop: false,
                resume_from: None,
            },
        );
        run.status = Some(RunStatus {
            phase: Some(RunPhase::Failed),
            steps: steps
                .iter()
                .map(|(name, phase)| StepStatus {
                    name: (*name).into(),
                    phase: Some(*phase),
                    attempts: Some(1),
                    ..StepStatus::default()
                })
                .collect(),
            ..RunStatus::default()
        });
        run
    }

    #[test]
    fn steps_are_layered_below_their_furthest_parent() {
        let graph = build(
            &flow(
                "steps:\n- {name: start, next: [a, b]}\n- {name: a, next: [join]}\n- {name: b, next: [c]}\n- {name: c, next: [join]}\n- {name: join, join: true, next: [end]}\n- {name: end}\n",
            ),
            None,
        );
        let places = layout(&graph);
        assert_eq!(places["start"].0, 0);
        assert_eq!(places["a"].0, 1);
        assert_eq!(places["b"].0, 1);
        assert_eq!(places["c"].0, 2);
        assert_eq!(places["join"].0, 3);
        assert_eq!(places["end"].0, 4);
    }

    #[test]
    fn an_edge_that_skips_layers_runs_beside_the_steps_it_passes() {
        let graph = build(
            &flow(
                "steps:\n- {name: start, next: [a, b]}\n- {name: a, next: [c]}\n- {name: c, next: [join]}\n- {name: b, next: [join]}\n- {name: join, join: true, next: [end]}\n- {name: end}\n",
            ),
            None,
        );
        let arrangement = arrange(&graph);
        let skipping = graph
            .edges
            .iter()
            .position(|e| e.from == "b" && e.to == "join")
            .unwrap();
        // b (layer 1) to join (layer 3) crosses layer 2, beside c: a slot of its own there.
        assert_eq!(arrangement.routes[skipping].len(), 1);
        let (layer, slot) = arrangement.routes[skipping][0];
        assert_eq!(layer, 2);
        assert_ne!((layer, slot), arrangement.places["c"]);
        assert_eq!(arrangement.slots[&2], 2);
        assert!(
            arrangement
                .routes
                .iter()
                .enumerate()
                .all(|(i, r)| i == skipping || r.is_empty())
        );
    }

    #[test]
    fn foreach_bodies_joins_and_multi_node_steps_are_told_apart() {
        let graph = build(&foreach_flow(), None);
        let kinds: Vec<(&str, &Kind)> = graph
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), &n.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("start", &Kind::Foreach),
                ("each", &Kind::ForeachBody),
                ("gather", &Kind::Join),
                ("train", &Kind::MultiNode(2)),
                ("end", &Kind::Plain),
            ]
        );
    }

    #[test]
    fn the_svg_has_one_group_per_step_coloured_by_its_phase() {
        let run = run_with(&[
            ("start", StepPhase::Succeeded),
            ("each", StepPhase::Succeeded),
            ("gather", StepPhase::Failed),
        ]);
        let svg = svg(&build(&foreach_flow(), Some(&run)));
        assert_eq!(svg.matches(r#"<g class="step""#).count(), 5);
        assert!(svg.contains(r#"data-step="gather" data-phase="Failed""#));
        assert!(svg.contains(r#"data-step="end" data-phase="not run""#));
        assert!(svg.contains("#c62828"), "failed steps are red");
        assert!(svg.contains("2 nodes"));
        assert!(svg.starts_with("<svg"));
    }

    #[test]
    fn the_png_is_a_png_of_twice_the_svg_size() {
        let run = run_with(&[("start", StepPhase::Succeeded)]);
        let svg = svg(&build(&foreach_flow(), Some(&run)));
        let png = png(&svg).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn text_mermaid_and_dot_name_every_step_and_edge() {
        let run = run_with(&[
            ("start", StepPhase::Succeeded),
            ("each", StepPhase::Running),
        ]);
        let graph = build(&foreach_flow(), Some(&run));
        let text = text(&graph);
        assert!(text.contains("start"), "{text}");
        assert!(text.contains("Running"), "{text}");
        assert!(text.contains("-> each"), "{text}");
        let mermaid = mermaid(&graph);
        assert!(mermaid.contains("start --> each"));
        assert!(mermaid.contains(":::running"));
        let dot = dot(&graph);
        assert!(dot.contains("\"gather\" -> \"train\";"));
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m 05s");
        assert_eq!(human_duration(7260), "2h 01m");
    }
}
