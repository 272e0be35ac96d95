//! Markdown read into the tree, through Tiptap StarterKit's schema:
//! paragraphs, headings, bullet and ordered lists, code blocks,
//! blockquotes, horizontal rules, hard breaks; bold, italic, strike, code
//! and links. What the schema has no node for (HTML, images, tables) is
//! kept as its text.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use serde_json::{Map, Value};

use crate::error::ContentError;
use crate::tree::{Element, MAX_DEPTH, Marks, Node, Run, is_textblock, push_run};

/// An open block while parsing: an element, or a container the schema has
/// no node for (its content goes to the element below it).
#[derive(Debug)]
struct Frame {
    element: Option<Element>,
    /// A paragraph the parser did not announce (a tight list item's text).
    implicit: bool,
}

#[derive(Debug)]
struct Builder {
    /// The document's own children.
    doc: Vec<Node>,
    frames: Vec<Frame>,
    marks: Vec<(String, Value)>,
}

/// The nodes of a Markdown document (CommonMark and strikethrough).
pub fn parse(markdown: &str) -> Result<Vec<Node>, ContentError> {
    let mut builder = Builder {
        doc: Vec::new(),
        frames: Vec::new(),
        marks: Vec::new(),
    };
    for event in Parser::new_ext(markdown, Options::ENABLE_STRIKETHROUGH) {
        builder.event(event)?;
    }
    while !builder.frames.is_empty() {
        builder.close();
    }
    Ok(builder.doc)
}

impl Builder {
    fn event(&mut self, event: Event<'_>) -> Result<(), ContentError> {
        match event {
            Event::Start(tag) => self.start(tag)?,
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(&text),
            Event::Code(code) => {
                let mut marks = Marks::new();
                marks.insert("code".to_owned(), Value::Object(Map::new()));
                let target = self.inline_target();
                push_run(
                    target,
                    Run {
                        text: code.to_string(),
                        marks,
                    },
                );
            }
            Event::SoftBreak => self.text(" "),
            Event::HardBreak => {
                self.inline_target()
                    .push(Node::Element(Element::new("hardBreak", Vec::new())));
            }
            Event::Rule => {
                self.close_implicit();
                self.block_target()
                    .push(Node::Element(Element::new("horizontalRule", Vec::new())));
            }
            Event::Html(text)
            | Event::InlineHtml(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text)
            | Event::FootnoteReference(text) => self.text(&text),
            Event::TaskListMarker(_) => {}
        }
        Ok(())
    }

    fn start(&mut self, tag: Tag<'_>) -> Result<(), ContentError> {
        let mark = match &tag {
            Tag::Emphasis => Some(("italic", Value::Object(Map::new()))),
            Tag::Strong => Some(("bold", Value::Object(Map::new()))),
            Tag::Strikethrough => Some(("strike", Value::Object(Map::new()))),
            Tag::Link { dest_url, .. } => {
                let mut attrs = Map::new();
                attrs.insert("href".to_owned(), Value::from(dest_url.to_string()));
                Some(("link", Value::Object(attrs)))
            }
            _ => None,
        };
        if let Some((name, attrs)) = mark {
            self.marks.push((name.to_owned(), attrs));
            return Ok(());
        }
        if matches!(tag, Tag::Image { .. }) {
            // Its alt text is the image's content: kept as text.
            return Ok(());
        }
        if self.frames.len() >= MAX_DEPTH {
            return Err(ContentError::TooDeep(MAX_DEPTH));
        }
        self.close_implicit();
        let element = match tag {
            Tag::Paragraph => Some(Element::new("paragraph", Vec::new())),
            Tag::Heading { level, .. } => {
                let mut heading = Element::new("heading", Vec::new());
                heading
                    .attrs
                    .insert("level".to_owned(), Value::from(level as u64));
                Some(heading)
            }
            Tag::BlockQuote(_) => Some(Element::new("blockquote", Vec::new())),
            Tag::CodeBlock(kind) => {
                let mut code = Element::new("codeBlock", Vec::new());
                if let CodeBlockKind::Fenced(info) = kind
                    && let Some(language) = info.split_whitespace().next()
                {
                    code.attrs
                        .insert("language".to_owned(), Value::from(language.to_owned()));
                }
                Some(code)
            }
            Tag::List(None) => Some(Element::new("bulletList", Vec::new())),
            Tag::List(Some(start)) => {
                let mut list = Element::new("orderedList", Vec::new());
                list.attrs.insert("start".to_owned(), Value::from(start));
                Some(list)
            }
            Tag::Item => Some(Element::new("listItem", Vec::new())),
            _ => None,
        };
        self.frames.push(Frame {
            element,
            implicit: false,
        });
        Ok(())
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Link => {
                self.marks.pop();
            }
            TagEnd::Image => {}
            _ => {
                self.close_implicit();
                self.close();
            }
        }
    }

    fn text(&mut self, text: &str) {
        let marks: Marks = self.marks.iter().cloned().collect();
        // Tiptap's code mark excludes every other mark.
        let marks = if marks.contains_key("code") {
            marks
                .into_iter()
                .filter(|(name, _)| name == "code")
                .collect()
        } else {
            marks
        };
        let target = self.inline_target();
        push_run(
            target,
            Run {
                text: text.to_owned(),
                marks,
            },
        );
    }

    /// The children inline content goes to: the open text block, or a
    /// paragraph opened for it.
    fn inline_target(&mut self) -> &mut Vec<Node> {
        let in_textblock = self
            .frames
            .iter()
            .rev()
            .find_map(|frame| frame.element.as_ref())
            .is_some_and(|element| is_textblock(&element.name));
        if !in_textblock {
            self.frames.push(Frame {
                element: Some(Element::new("paragraph", Vec::new())),
                implicit: true,
            });
        }
        self.block_target()
    }

    /// The children of the innermost open element.
    fn block_target(&mut self) -> &mut Vec<Node> {
        match self
            .frames
            .iter_mut()
            .rev()
            .find_map(|frame| frame.element.as_mut())
        {
            Some(element) => &mut element.children,
            None => &mut self.doc,
        }
    }

    fn close_implicit(&mut self) {
        if self.frames.last().is_some_and(|frame| frame.implicit) {
            self.close();
        }
    }

    /// Pops the top frame into the element below it.
    fn close(&mut self) {
        let Some(frame) = self.frames.pop() else {
            return;
        };
        let Some(mut element) = frame.element else {
            return;
        };
        if element.name == "codeBlock"
            && let Some(Node::Text(runs)) = element.children.last_mut()
            && let Some(run) = runs.last_mut()
            && run.text.ends_with('\n')
        {
            run.text.pop();
            if run.text.is_empty() {
                runs.pop();
            }
            if runs.is_empty() {
                element.children.pop();
            }
        }
        if element.name == "listItem" && element.children.is_empty() {
            element
                .children
                .push(Node::Element(Element::new("paragraph", Vec::new())));
        }
        self.block_target().push(Node::Element(element));
    }
}
