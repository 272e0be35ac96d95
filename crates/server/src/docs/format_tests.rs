use super::*;

fn header(documents: u64) -> Header {
    Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        export_id: "e1".to_owned(),
        log: "embedded".to_owned(),
        documents,
        created_at_ms: 1,
    }
}

fn entry(name: &str, size: usize) -> DocEntry {
    DocEntry {
        doc: name.to_owned(),
        state: (0..size).map(|index| (index % 251) as u8).collect(),
        state_vector: vec![1, 2, 3],
        log: "embedded".to_owned(),
        position: Some(LinePosition {
            partition: 0,
            offset: 7,
        }),
    }
}

fn written(entries: &[DocEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::start(&mut out, &header(entries.len() as u64)).unwrap();
    for each in entries {
        writer.write(each).unwrap();
    }
    writer.finish().unwrap();
    out
}

fn read_all(bytes: &[u8]) -> Result<(Vec<DocEntry>, Trailer), FormatError> {
    let mut reader = StreamReader::open(bytes)?;
    let mut entries = Vec::new();
    loop {
        match reader.next_entry()? {
            Item::Doc(entry, _) => entries.push(entry),
            Item::End(trailer) => return Ok((entries, trailer)),
        }
    }
}

#[test]
fn a_stream_reads_back_what_was_written() {
    let entries = vec![entry("a", 0), entry("b/ü", 10), entry("big", 300_000)];
    let bytes = written(&entries);
    let (read, trailer) = read_all(&bytes).unwrap();
    assert_eq!(read, entries);
    assert_eq!(trailer.documents, 3);
}

#[test]
fn an_empty_export_is_a_whole_stream() {
    let (read, trailer) = read_all(&written(&[])).unwrap();
    assert!(read.is_empty());
    assert_eq!(trailer.documents, 0);
}

#[test]
fn a_stream_cut_anywhere_is_refused() {
    let bytes = written(&[entry("a", 100), entry("b", 100)]);
    for cut in 0..bytes.len() {
        assert!(
            read_all(&bytes[..cut]).is_err(),
            "cut at {cut} read as whole"
        );
    }
}

#[test]
fn a_missing_document_line_is_caught_by_the_trailer() {
    let bytes = written(&[entry("a", 10), entry("b", 10)]);
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let without_b = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[3]);
    assert!(matches!(
        read_all(without_b.as_bytes()),
        Err(FormatError::Mismatch { .. })
    ));
}

#[test]
fn an_altered_document_is_caught_by_the_checksum() {
    let bytes = written(&[entry("a", 10)]);
    let text = String::from_utf8(bytes).unwrap().replace("\"a\"", "\"z\"");
    assert!(matches!(
        read_all(text.as_bytes()),
        Err(FormatError::Mismatch { .. })
    ));
}

#[test]
fn another_format_or_a_newer_version_is_refused() {
    let mut other = header(0);
    other.format = "other".to_owned();
    let line = serde_json::to_string(&other).unwrap();
    assert!(matches!(
        StreamReader::open(line.as_bytes()),
        Err(FormatError::NotWeftDocs(_))
    ));
    let mut newer = header(0);
    newer.version = VERSION + 1;
    let line = serde_json::to_string(&newer).unwrap();
    assert!(matches!(
        StreamReader::open(line.as_bytes()),
        Err(FormatError::Version(_))
    ));
}

#[test]
fn garbage_never_panics_the_reader() {
    for input in [
        &b""[..],
        b"\n",
        b"{}",
        b"\xff\xfe",
        b"{\"format\":\"weft-docs\",\"version\":1}\n{\"doc\":1}\n",
    ] {
        assert!(read_all(input).is_err());
    }
}
