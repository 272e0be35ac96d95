//! The ProseMirror-shaped tree every editor format goes through, and its
//! ProseMirror JSON form.
//!
//! A document is the children of the `doc` node: [`Node`]s, each an
//! element (a node type's name, its attributes, its children) or a run of
//! text, the way y-prosemirror lays a ProseMirror document out in a
//! `Y.XmlFragment`: adjacent text nodes are one `Y.XmlText`, their marks
//! its formatting attributes (`{"bold": {}}`, `{"link": {"href": ..}}`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ContentError;

/// Most levels of nesting read or written: bounds every recursion on
/// caller or stored input.
pub const MAX_DEPTH: usize = 64;

/// Mark name to the mark's attributes (an object, `{}` when it has none).
pub type Marks = BTreeMap<String, Value>;

/// One node of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// An element: a block or an inline node that is not text.
    Element(Element),
    /// Adjacent text, as runs of one set of marks each.
    Text(Vec<Run>),
}

/// A ProseMirror node other than text.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The node type's name (`paragraph`, `heading`, `bulletList`, ..).
    pub name: String,
    /// Its attributes without null values (y-prosemirror stores none).
    pub attrs: BTreeMap<String, Value>,
    /// Its content.
    pub children: Vec<Node>,
}

/// Text under one set of marks.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The text.
    pub text: String,
    /// Its marks.
    pub marks: Marks,
}

impl Element {
    /// An element without attributes.
    pub fn new(name: &str, children: Vec<Node>) -> Self {
        Self {
            name: name.to_owned(),
            attrs: BTreeMap::new(),
            children,
        }
    }
}

/// Appends `run` to `nodes`, merged into a trailing text node (and into
/// its last run if the marks are the same).
pub(crate) fn push_run(nodes: &mut Vec<Node>, run: Run) {
    if run.text.is_empty() {
        return;
    }
    if let Some(Node::Text(runs)) = nodes.last_mut() {
        if let Some(last) = runs.last_mut()
            && last.marks == run.marks
        {
            last.text.push_str(&run.text);
            return;
        }
        runs.push(run);
        return;
    }
    nodes.push(Node::Text(vec![run]));
}

/// The plain text of `nodes`: each text block's text on a line of its own.
pub(crate) fn plain_text(nodes: &[Node]) -> String {
    let mut lines = Vec::new();
    collect_lines(nodes, &mut lines, 0);
    lines.join("\n")
}

fn collect_lines(nodes: &[Node], lines: &mut Vec<String>, depth: usize) {
    if depth >= MAX_DEPTH {
        return;
    }
    let inline = nodes.iter().all(|node| match node {
        Node::Text(_) => true,
        Node::Element(element) => element.name == "hardBreak",
    });
    if inline && !nodes.is_empty() {
        let mut line = String::new();
        for node in nodes {
            match node {
                Node::Text(runs) => runs.iter().for_each(|run| line.push_str(&run.text)),
                Node::Element(_) => line.push('\n'),
            }
        }
        lines.push(line);
        return;
    }
    for node in nodes {
        match node {
            Node::Element(element) if element.children.is_empty() => {
                if is_textblock(&element.name) {
                    lines.push(String::new());
                }
            }
            Node::Element(element) => collect_lines(&element.children, lines, depth + 1),
            Node::Text(runs) => lines.push(runs.iter().map(|run| run.text.as_str()).collect()),
        }
    }
}

/// Whether `name` is a node holding inline content in Tiptap's StarterKit.
pub(crate) fn is_textblock(name: &str) -> bool {
    matches!(name, "paragraph" | "heading" | "codeBlock")
}

/// One paragraph per line of `text`.
pub(crate) fn paragraphs_of(text: &str) -> Vec<Node> {
    text.split('\n')
        .map(|line| {
            let mut children = Vec::new();
            push_run(
                &mut children,
                Run {
                    text: line.trim_end_matches('\r').to_owned(),
                    marks: Marks::new(),
                },
            );
            Node::Element(Element::new("paragraph", children))
        })
        .collect()
}

/// The document's ProseMirror JSON (`{"type":"doc","content":[..]}`).
pub fn to_prosemirror(nodes: &[Node]) -> Value {
    let mut doc = Map::new();
    doc.insert("type".to_owned(), Value::from("doc"));
    doc.insert("content".to_owned(), Value::Array(json_content(nodes, 0)));
    Value::Object(doc)
}

fn json_content(nodes: &[Node], depth: usize) -> Vec<Value> {
    let mut content = Vec::new();
    if depth >= MAX_DEPTH {
        return content;
    }
    for node in nodes {
        match node {
            Node::Element(element) => {
                let mut object = Map::new();
                object.insert("type".to_owned(), Value::from(element.name.as_str()));
                if !element.attrs.is_empty() {
                    let attrs = element
                        .attrs
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect();
                    object.insert("attrs".to_owned(), Value::Object(attrs));
                }
                if !element.children.is_empty() {
                    let children = json_content(&element.children, depth + 1);
                    object.insert("content".to_owned(), Value::Array(children));
                }
                content.push(Value::Object(object));
            }
            Node::Text(runs) => {
                for run in runs {
                    content.push(text_json(run));
                }
            }
        }
    }
    content
}

fn text_json(run: &Run) -> Value {
    let mut object = Map::new();
    object.insert("type".to_owned(), Value::from("text"));
    if !run.marks.is_empty() {
        let marks = run
            .marks
            .iter()
            .map(|(name, attrs)| {
                let mut mark = Map::new();
                mark.insert("type".to_owned(), Value::from(name.as_str()));
                if attrs.as_object().is_some_and(|attrs| !attrs.is_empty()) {
                    mark.insert("attrs".to_owned(), attrs.clone());
                }
                Value::Object(mark)
            })
            .collect();
        object.insert("marks".to_owned(), Value::Array(marks));
    }
    object.insert("text".to_owned(), Value::from(run.text.as_str()));
    Value::Object(object)
}

/// The nodes of a ProseMirror JSON document.
pub fn from_prosemirror(doc: &Value) -> Result<Vec<Node>, ContentError> {
    let Some(object) = doc.as_object() else {
        return Err(ContentError::ProseMirror("a document is an object".into()));
    };
    if object.get("type").and_then(Value::as_str) != Some("doc") {
        return Err(ContentError::ProseMirror(
            r#"the top node is "type": "doc""#.into(),
        ));
    }
    nodes_of(object.get("content"), 0)
}

fn nodes_of(content: Option<&Value>, depth: usize) -> Result<Vec<Node>, ContentError> {
    if depth >= MAX_DEPTH {
        return Err(ContentError::TooDeep(MAX_DEPTH));
    }
    let items = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ContentError::ProseMirror("content is an array".into())),
    };
    let mut nodes = Vec::new();
    for item in items {
        let Some(object) = item.as_object() else {
            return Err(ContentError::ProseMirror("a node is an object".into()));
        };
        let Some(name) = object.get("type").and_then(Value::as_str) else {
            return Err(ContentError::ProseMirror("a node has a string type".into()));
        };
        if name.is_empty() {
            return Err(ContentError::ProseMirror(
                "a node's type is not empty".into(),
            ));
        }
        if name == "text" {
            let Some(text) = object.get("text").and_then(Value::as_str) else {
                return Err(ContentError::ProseMirror(
                    "a text node has a string text".into(),
                ));
            };
            let marks = marks_of(object.get("marks"))?;
            push_run(
                &mut nodes,
                Run {
                    text: text.to_owned(),
                    marks,
                },
            );
            continue;
        }
        let mut attrs = BTreeMap::new();
        match object.get("attrs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(given)) => {
                for (key, value) in given {
                    if !value.is_null() {
                        attrs.insert(key.clone(), value.clone());
                    }
                }
            }
            Some(_) => return Err(ContentError::ProseMirror("attrs is an object".into())),
        }
        let children = nodes_of(object.get("content"), depth + 1)?;
        nodes.push(Node::Element(Element {
            name: name.to_owned(),
            attrs,
            children,
        }));
    }
    Ok(nodes)
}

fn marks_of(marks: Option<&Value>) -> Result<Marks, ContentError> {
    let mut found = Marks::new();
    let items = match marks {
        None | Some(Value::Null) => return Ok(found),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ContentError::ProseMirror("marks is an array".into())),
    };
    for mark in items {
        let Some(name) = mark.get("type").and_then(Value::as_str) else {
            return Err(ContentError::ProseMirror("a mark has a string type".into()));
        };
        let attrs = match mark.get("attrs") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(attrs)) => Value::Object(attrs.clone()),
            Some(_) => {
                return Err(ContentError::ProseMirror(
                    "a mark's attrs is an object".into(),
                ));
            }
        };
        found.insert(name.to_owned(), attrs);
    }
    Ok(found)
}
