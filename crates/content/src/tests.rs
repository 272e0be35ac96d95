use serde_json::json;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Map, ReadTxn, Text, Transact, Update};

use crate::stream::{StreamEdit, TextStream};
use crate::{Format, parse_markdown, patch_content, read_content, write_content, write_markdown};

const SAMPLE: &str = "# Title\n\nSome **bold**, *italic*, ~~gone~~ and `code` with a [link](<https://example.com/a>).\n\n- one\n- two\n  - nested\n\n3. three\n4. four\n\n> quoted\n> \n> twice\n\n```rust\nfn main() {}\n```\n\nline\\\nbreak\n\n---\n";

fn apply(state: &[u8], update: &[u8]) -> Vec<u8> {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    if !state.is_empty() {
        txn.apply_update(Update::decode_v1(state).unwrap()).unwrap();
    }
    txn.apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    txn.encode_state_as_update_v1(&yrs::StateVector::default())
}

fn written(state: &[u8], format: Format, body: &str) -> Vec<u8> {
    let update = write_content(state, "default", format, body)
        .unwrap()
        .unwrap();
    apply(state, &update)
}

#[test]
fn markdown_round_trips_through_the_tree() {
    let nodes = parse_markdown(SAMPLE).unwrap();
    let again = write_markdown(&nodes);
    assert_eq!(parse_markdown(&again).unwrap(), nodes, "{again}");
    assert_eq!(write_markdown(&parse_markdown(&again).unwrap()), again);
}

#[test]
fn spaces_at_a_block_edge_survive_markdown() {
    let state = written(&[], Format::Markdown, "x\n");
    let body = r#"{"type":"doc","content":[{"type":"paragraph","content":[{"type":"text","text":" typed "}]}]}"#;
    let state = written(&state, Format::ProseMirror, body);
    let markdown = read_content(&state, "default", Format::Markdown).unwrap();
    assert_eq!(markdown, "&#32;typed&#32;\n");
    assert!(
        write_content(&state, "default", Format::Markdown, &markdown)
            .unwrap()
            .is_none()
    );
}

#[test]
fn markdown_maps_onto_starter_kit_names() {
    let doc = crate::to_prosemirror(&parse_markdown(SAMPLE).unwrap());
    let text = doc.to_string();
    for name in [
        "heading",
        "paragraph",
        "bulletList",
        "orderedList",
        "listItem",
        "blockquote",
        "codeBlock",
        "hardBreak",
        "horizontalRule",
        "bold",
        "italic",
        "strike",
        "code",
        "link",
    ] {
        assert!(
            text.contains(&format!("\"type\":\"{name}\"")),
            "{name} missing in {text}"
        );
    }
    assert_eq!(doc["content"][0]["attrs"]["level"], 1);
    assert_eq!(doc["content"][3]["attrs"]["start"], 3);
    // A tight list item's text is a paragraph, as the schema wants.
    assert_eq!(
        doc["content"][2]["content"][0]["content"][0]["type"],
        "paragraph"
    );
}

#[test]
fn markdown_written_to_a_fragment_reads_back_the_same() {
    let state = written(&[], Format::Markdown, SAMPLE);
    let markdown = read_content(&state, "default", Format::Markdown).unwrap();
    assert_eq!(
        parse_markdown(&markdown).unwrap(),
        parse_markdown(SAMPLE).unwrap()
    );
    // y-prosemirror's layout: elements by node name, marks as formatting.
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let fragment = doc.get_or_insert_xml_fragment("default");
    let markup = fragment.get_string(&doc.transact());
    assert!(
        markup.starts_with("<heading level=\"1\">Title</heading>"),
        "{markup}"
    );
    assert!(markup.contains("<bold>bold</bold>"), "{markup}");
    // Writing the same content again changes nothing.
    assert!(
        write_content(&state, "default", Format::Markdown, SAMPLE)
            .unwrap()
            .is_none()
    );
}

#[test]
fn prosemirror_round_trips() {
    let body = json!({"type":"doc","content":[
        {"type":"heading","attrs":{"level":2},"content":[{"type":"text","text":"Hi"}]},
        {"type":"paragraph","content":[
            {"type":"text","text":"a "},
            {"type":"text","text":"link","marks":[{"type":"link","attrs":{"href":"https://x.test/"}}]},
            {"type":"hardBreak"},
            {"type":"text","text":"b","marks":[{"type":"bold"}]}]}]});
    let state = written(&[], Format::ProseMirror, &body.to_string());
    let read: serde_json::Value =
        serde_json::from_str(&read_content(&state, "default", Format::ProseMirror).unwrap())
            .unwrap();
    assert_eq!(read, body);
}

#[test]
fn a_one_word_change_in_a_long_paragraph_is_a_small_update() {
    let long = "word ".repeat(400);
    let before = format!("# Head\n\n{long}end\n\nAfter.\n");
    let state = written(&[], Format::Markdown, &before);
    let after = before.replacen("word word", "word bird", 1);
    let update = write_content(&state, "default", Format::Markdown, &after)
        .unwrap()
        .unwrap();
    assert!(update.len() < 64, "{} bytes for one word", update.len());
    let state = apply(&state, &update);
    assert_eq!(
        parse_markdown(&read_content(&state, "default", Format::Markdown).unwrap()).unwrap(),
        parse_markdown(&after).unwrap()
    );
}

#[test]
fn a_new_paragraph_in_the_middle_keeps_its_neighbours() {
    let state = written(&[], Format::Markdown, "one\n\ntwo two two\n\nthree\n");
    let update = write_content(
        &state,
        "default",
        Format::Markdown,
        "one\n\nnew\n\ntwo two two\n\nthree\n",
    )
    .unwrap()
    .unwrap();
    // The new paragraph's element, its text and "new"; not its neighbours.
    assert!(update.len() < 80, "{} bytes", update.len());
    let state = apply(&state, &update);
    assert_eq!(
        read_content(&state, "default", Format::Text).unwrap(),
        "one\nnew\ntwo two two\nthree"
    );
}

#[test]
fn marks_change_without_retyping_the_paragraph() {
    let state = written(&[], Format::Markdown, "plain words here\n");
    let state = written(&state, Format::Markdown, "plain **words** here\n");
    assert_eq!(
        read_content(&state, "default", Format::Markdown).unwrap(),
        "plain **words** here\n"
    );
    // Text typed after bold text is not bold.
    let state = written(&state, Format::Markdown, "plain **words** here and more\n");
    assert_eq!(
        read_content(&state, "default", Format::Markdown).unwrap(),
        "plain **words** here and more\n"
    );
}

#[test]
fn text_roots_take_a_character_diff() {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("notes");
    text.insert(&mut doc.transact_mut(), 0, &"héllo wörld ".repeat(100));
    let state = doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    let want = "héllo wörld ".repeat(50) + "HÉLLO" + &"héllo wörld ".repeat(50);
    let update = write_content(&state, "notes", Format::Text, &want)
        .unwrap()
        .unwrap();
    assert!(update.len() < 48, "{} bytes", update.len());
    let state = apply(&state, &update);
    assert_eq!(read_content(&state, "notes", Format::Text).unwrap(), want);
    let refused = write_content(&state, "notes", Format::Markdown, "# no");
    assert!(matches!(
        refused,
        Err(crate::ContentError::WrongShape { .. })
    ));
}

#[test]
fn json_patch_edits_maps_and_arrays() {
    let (update, value) = patch_content(
        &[],
        "settings",
        &json!([{"op":"add","path":"/theme","value":"dark"},{"op":"add","path":"/size","value":3}]),
    )
    .unwrap();
    let state = apply(&[], &update.unwrap());
    assert_eq!(value, json!({"theme":"dark","size":3}));
    let (update, value) = patch_content(
        &state,
        "settings",
        &json!([{"op":"remove","path":"/theme"},{"op":"test","path":"/size","value":3}]),
    )
    .unwrap();
    let state = apply(&state, &update.unwrap());
    assert_eq!(value, json!({"size":3}));
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let map = doc.get_or_insert_map("settings");
    assert_eq!(map.len(&doc.transact()), 1);
    let (update, value) = patch_content(
        &[],
        "items",
        &json!([{"op":"add","path":"/-","value":{"a":1}}]),
    )
    .unwrap();
    assert!(update.is_some());
    assert_eq!(value, json!([{"a":1}]));
    let failed = patch_content(
        &state,
        "settings",
        &json!([{"op":"test","path":"/size","value":4}]),
    );
    assert!(matches!(failed, Err(crate::ContentError::PatchFailed(_))));
    let doc = Doc::new();
    let array = doc.get_or_insert_array("items");
    let _ = array.to_json(&doc.transact());
}

#[test]
fn a_stream_writes_at_its_cursor_while_others_edit_before_it() {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, "ab");
    let state = || {
        doc.transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    };
    let mut stream = TextStream::new(&state(), "t", 1).unwrap();
    let edits = [
        StreamEdit::Insert("XY".into()),
        StreamEdit::Insert("Z".into()),
        StreamEdit::Delete(1),
    ];
    for (step, edit) in edits.iter().enumerate() {
        let update = stream.apply(&state(), edit).unwrap().unwrap();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        if step == 0 {
            // Someone types at the start: the stream's cursor moves along.
            text.insert(&mut doc.transact_mut(), 0, "__");
        }
    }
    assert_eq!(text.get_string(&doc.transact()), "__aXYZ");
    assert!(stream.apply(&state(), &StreamEdit::Delete(5)).is_err());
    assert!(TextStream::new(&state(), "t", 99).is_err());
    assert_eq!(
        StreamEdit::parse(r#"{"insert":"x"}"#),
        Ok(StreamEdit::Insert("x".into()))
    );
    assert!(StreamEdit::parse(r#"{"insert":"x","delete":1}"#).is_err());
    assert!(StreamEdit::parse("nope").is_err());
}

#[test]
fn a_link_an_editor_made_is_not_rewritten_by_the_same_markdown() {
    let body = r#"{"type":"doc","content":[{"type":"paragraph","content":[
        {"type":"text","text":"see "},
        {"type":"text","text":"docs","marks":[{"type":"link","attrs":{"href":"https://x.test/","target":"_blank","rel":"noopener noreferrer nofollow"}}]}]}]}"#;
    let state = written(&[], Format::ProseMirror, body);
    let markdown = read_content(&state, "default", Format::Markdown).unwrap();
    assert_eq!(markdown, "see [docs](https://x.test/)\n");
    assert!(
        write_content(&state, "default", Format::Markdown, &markdown)
            .unwrap()
            .is_none()
    );
    let update = write_content(
        &state,
        "default",
        Format::Markdown,
        "see [docs](https://x.test/) too\n",
    )
    .unwrap()
    .unwrap();
    let state = apply(&state, &update);
    let read: serde_json::Value =
        serde_json::from_str(&read_content(&state, "default", Format::ProseMirror).unwrap())
            .unwrap();
    assert_eq!(
        read["content"][0]["content"][1]["marks"][0]["attrs"]["target"],
        "_blank"
    );
}

#[test]
fn nested_blocks_round_trip_and_bad_input_is_refused() {
    let markdown = "1. first\n\n   ```\n   code\n   ```\n2. second\n   - inner **bold**\n\n> - quoted item\n>\n> para\n";
    let nodes = parse_markdown(markdown).unwrap();
    assert_eq!(
        parse_markdown(&write_markdown(&nodes)).unwrap(),
        nodes,
        "{}",
        write_markdown(&nodes)
    );
    for bad in [
        "",
        "[]",
        r#"{"type":"paragraph"}"#,
        r#"{"type":"doc","content":[{"text":"x"}]}"#,
        r#"{"type":"doc","content":[{"type":"text"}]}"#,
    ] {
        assert!(
            write_content(&[], "default", Format::ProseMirror, bad).is_err(),
            "{bad}"
        );
    }
    let deep = format!("{}x", "> ".repeat(200));
    assert!(matches!(
        parse_markdown(&deep),
        Err(crate::ContentError::TooDeep(_))
    ));
    assert!(write_content(&[1, 2, 3], "default", Format::Markdown, "x").is_err());
}
