//! The tree written as Markdown that [`crate::markdown::parse`] reads back
//! to the same tree (for the nodes and marks of Tiptap's StarterKit;
//! empty paragraphs, which Markdown cannot say, are left out).

use serde_json::Value;

use crate::tree::{Element, MAX_DEPTH, Marks, Node, Run};

/// The order marks open in, outermost first: a link holds emphasis. Code
/// holds nothing (Tiptap's code mark excludes the others), so a code run
/// is written whole, delimiters and all.
const MARK_ORDER: [&str; 4] = ["link", "bold", "italic", "strike"];

/// The document as Markdown, ending with a newline (empty: no content).
pub fn write(nodes: &[Node]) -> String {
    let blocks = blocks(nodes, 0);
    if blocks.is_empty() {
        return String::new();
    }
    let mut markdown = blocks.join("\n\n");
    markdown.push('\n');
    markdown
}

/// Each block of `nodes` as Markdown (no trailing newline).
fn blocks(nodes: &[Node], depth: usize) -> Vec<String> {
    let mut written = Vec::new();
    if depth >= MAX_DEPTH {
        return written;
    }
    for node in nodes {
        let block = match node {
            Node::Text(_) => inline(std::slice::from_ref(node)),
            Node::Element(element) => block(element, depth),
        };
        if !block.is_empty() {
            written.push(block);
        }
    }
    written
}

fn block(element: &Element, depth: usize) -> String {
    match element.name.as_str() {
        "heading" => {
            let level = element
                .attrs
                .get("level")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 6);
            let text = inline(&element.children);
            let hashes = "#".repeat(usize::try_from(level).unwrap_or(1));
            format!("{hashes} {text}")
        }
        "codeBlock" => {
            let code: String = element
                .children
                .iter()
                .filter_map(|node| match node {
                    Node::Text(runs) => {
                        Some(runs.iter().map(|run| run.text.as_str()).collect::<String>())
                    }
                    Node::Element(_) => None,
                })
                .collect();
            let fence = "`".repeat(longest_run(&code, '`').max(2) + 1);
            let language = element
                .attrs
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!("{fence}{language}\n{code}\n{fence}")
        }
        "blockquote" => {
            let inner = blocks(&element.children, depth + 1).join("\n\n");
            prefix_lines(&inner, "> ", "> ")
        }
        "bulletList" | "orderedList" => list(element, depth),
        "horizontalRule" => "---".to_owned(),
        "hardBreak" => "\\".to_owned(),
        _ if element.children.iter().all(is_inline) => inline(&element.children),
        _ => blocks(&element.children, depth + 1).join("\n\n"),
    }
}

fn is_inline(node: &Node) -> bool {
    match node {
        Node::Text(_) => true,
        Node::Element(element) => element.name == "hardBreak",
    }
}

fn list(element: &Element, depth: usize) -> String {
    let ordered = element.name == "orderedList";
    let mut number = element
        .attrs
        .get("start")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let mut items = Vec::new();
    for child in &element.children {
        let Node::Element(item) = child else {
            continue;
        };
        let marker = if ordered {
            format!("{number}. ")
        } else {
            "- ".to_owned()
        };
        number = number.saturating_add(1);
        let mut inner = String::new();
        let parts = blocks(&item.children, depth + 1);
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                // A nested list keeps the list tight; anything else after
                // a paragraph needs a blank line.
                let next_is_list = matches!(
                    item.children.get(index),
                    Some(Node::Element(next)) if next.name.ends_with("List")
                );
                inner.push_str(if next_is_list { "\n" } else { "\n\n" });
            }
            inner.push_str(part);
        }
        let indent = " ".repeat(marker.len());
        items.push(prefix_lines(&inner, &marker, &indent));
    }
    items.join("\n")
}

/// `text` with `first` before its first line and `rest` before the others
/// (blank lines stay blank, trimmed).
fn prefix_lines(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let prefix = if index == 0 { first } else { rest };
        if line.is_empty() {
            out.push_str(prefix.trim_end());
        } else {
            out.push_str(prefix);
            out.push_str(line);
        }
    }
    out
}

fn longest_run(text: &str, wanted: char) -> usize {
    let mut longest = 0;
    let mut current = 0;
    for character in text.chars() {
        if character == wanted {
            current += 1;
            longest = longest.max(current);
        } else {
            current = 0;
        }
    }
    longest
}

/// Inline content: runs with their marks' delimiters, hard breaks.
fn inline(nodes: &[Node]) -> String {
    let mut out = String::new();
    let mut open: Vec<(&str, Value)> = Vec::new();
    let mut line_start = true;
    for node in nodes {
        match node {
            Node::Element(element) if element.name == "hardBreak" => {
                close_marks(&mut out, &mut open, 0);
                out.push_str("\\\n");
                line_start = true;
            }
            Node::Element(_) => {}
            Node::Text(runs) => {
                for run in runs {
                    write_run(&mut out, &mut open, run, line_start);
                    line_start = false;
                }
            }
        }
    }
    close_marks(&mut out, &mut open, 0);
    keep_edge_spaces(out)
}

/// Markdown drops a block's leading and trailing spaces: the outermost
/// ones are written as `&#32;` so a space typed last (mid-word in an
/// editor) survives a round trip.
fn keep_edge_spaces(mut text: String) -> String {
    if text.ends_with(' ') {
        text.pop();
        text.push_str("&#32;");
    }
    if let Some(rest) = text.strip_prefix(' ') {
        text = format!("&#32;{rest}");
    }
    text
}

fn ordered_marks(marks: &Marks) -> Vec<(&'static str, Value)> {
    MARK_ORDER
        .iter()
        .filter_map(|name| marks.get(*name).map(|attrs| (*name, attrs.clone())))
        .collect()
}

fn write_run(out: &mut String, open: &mut Vec<(&str, Value)>, run: &Run, line_start: bool) {
    let wanted = ordered_marks(&run.marks);
    let keep = open
        .iter()
        .zip(&wanted)
        .take_while(|(have, want)| have == want)
        .count();
    close_marks(out, open, keep);
    let code = run.marks.contains_key("code");
    let text = run.text.as_str();
    // Delimiters do not open before white space: it goes outside them.
    let body = if wanted.len() > keep {
        let trimmed = text.trim_start();
        out.push_str(&escape(&text[..text.len() - trimmed.len()], line_start));
        trimmed
    } else {
        text
    };
    let at_line_start = line_start && body.len() == text.len();
    for (name, attrs) in &wanted[keep..] {
        out.push_str(opener(name));
        open.push((name, attrs.clone()));
    }
    if code {
        let fence = "`".repeat(longest_run(body, '`') + 1);
        let pad = if body.starts_with('`') || body.ends_with('`') {
            " "
        } else {
            ""
        };
        out.push_str(&format!("{fence}{pad}{body}{pad}{fence}"));
    } else {
        out.push_str(&escape(body, at_line_start));
    }
}

fn close_marks(out: &mut String, open: &mut Vec<(&str, Value)>, keep: usize) {
    if open.len() <= keep {
        return;
    }
    // Delimiters do not close after white space either.
    let trimmed_len = out.trim_end_matches([' ', '\t']).len();
    let trailing = out.split_off(trimmed_len);
    while open.len() > keep {
        if let Some((name, attrs)) = open.pop() {
            out.push_str(&closer(name, &attrs));
        }
    }
    out.push_str(&trailing);
}

fn opener(name: &str) -> &'static str {
    match name {
        "link" => "[",
        "bold" => "**",
        "italic" => "*",
        "strike" => "~~",
        _ => "",
    }
}

fn closer(name: &str, attrs: &Value) -> String {
    match name {
        "link" => {
            let href = attrs
                .get("href")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if href.is_empty() || href.contains([' ', '(', ')', '<', '>', '\\']) {
                format!("](<{}>)", href.replace('<', "%3C").replace('>', "%3E"))
            } else {
                format!("]({href})")
            }
        }
        "bold" => "**".to_owned(),
        "italic" => "*".to_owned(),
        "strike" => "~~".to_owned(),
        _ => String::new(),
    }
}

/// `text` with Markdown's inline syntax escaped, and a line's leading
/// block syntax when it starts one.
fn escape(text: &str, line_start: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(
            character,
            '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '<' | '>' | '&' | '!' | '#'
        ) {
            out.push('\\');
        }
        out.push(character);
    }
    if line_start {
        let digits = out.chars().take_while(char::is_ascii_digit).count();
        if out.starts_with(['-', '+', '=']) {
            return format!("\\{out}");
        }
        if digits > 0 && out[digits..].starts_with(['.', ')']) {
            return format!("{}\\{}", &out[..digits], &out[digits..]);
        }
    }
    out
}
