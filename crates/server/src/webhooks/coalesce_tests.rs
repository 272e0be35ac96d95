use super::*;

const DEBOUNCE: Duration = Duration::from_secs(2);
const MAX_DELAY: Duration = Duration::from_secs(10);

fn coalescer() -> Coalescer {
    Coalescer::new(Timing {
        debounce: DEBOUNCE,
        max_delay: MAX_DELAY,
    })
}

fn change(position: LogSeq, doc: &str, kind: ChangeKind, author: &str) -> Change {
    Change {
        position,
        doc: doc.to_owned(),
        kind,
        update: if kind == ChangeKind::Deleted {
            Bytes::new()
        } else {
            Bytes::from(vec![u8::try_from(position % 200).unwrap_or(0); 3])
        },
        author: Some(author.to_owned()),
        at_ms: Some(position * 1000),
    }
}

#[test]
fn edits_within_the_debounce_become_one_event() {
    let start = Instant::now();
    let mut events = coalescer();
    events.push(change(1, "a", ChangeKind::Changed, "ann"), start);
    events.push(
        change(2, "a", ChangeKind::Changed, "bob"),
        start + Duration::from_secs(1),
    );
    events.push(
        change(3, "a", ChangeKind::Changed, "ann"),
        start + Duration::from_millis(2900),
    );
    assert!(
        events
            .take_ready(start + Duration::from_millis(4800), 8)
            .is_empty()
    );
    assert_eq!(
        events.next_deadline(),
        Some(start + Duration::from_millis(4900))
    );
    let ready = events.take_ready(start + Duration::from_millis(4900), 8);
    assert_eq!(ready.len(), 1);
    let event = &ready[0];
    assert_eq!((event.from, event.to), (1, 3));
    assert_eq!(event.updates.len(), 3);
    assert_eq!(event.authors, vec!["ann".to_owned(), "bob".to_owned()]);
    assert_eq!(event.at_ms, Some(3000));
}

#[test]
fn a_busy_document_goes_out_after_the_max_delay() {
    let start = Instant::now();
    let mut events = coalescer();
    for second in 0_i64..12 {
        let now = start + Duration::from_secs(second.unsigned_abs());
        events.push(change(second + 1, "a", ChangeKind::Changed, "ann"), now);
        let ready = events.take_ready(now, 8);
        if second < 10 {
            assert!(ready.is_empty(), "sent at {second} s");
        } else {
            assert_eq!(ready.len(), 1, "not sent at {second} s");
            assert_eq!((ready[0].from, ready[0].to), (1, 11));
            return;
        }
    }
}

#[test]
fn a_document_sends_its_next_event_only_after_the_one_before() {
    let start = Instant::now();
    let mut events = coalescer();
    events.push(change(1, "a", ChangeKind::Changed, "ann"), start);
    let later = start + DEBOUNCE;
    let first = events.take_ready(later, 8);
    assert_eq!(first.len(), 1);
    events.push(change(2, "a", ChangeKind::Changed, "ann"), later);
    events.push(change(3, "b", ChangeKind::Changed, "ann"), later);
    let after = later + DEBOUNCE;
    let ready = events.take_ready(after, 8);
    assert_eq!(ready.len(), 1, "a's second event waits for its first");
    assert_eq!(ready[0].doc, "b");
    assert_eq!(events.oldest_held(), Some(1));
    events.done("a");
    let ready = events.take_ready(after, 8);
    assert_eq!(ready.len(), 1);
    assert_eq!((ready[0].doc.as_str(), ready[0].from), ("a", 2));
    assert_eq!(events.oldest_held(), Some(2));
    events.done("a");
    events.done("b");
    assert_eq!(events.oldest_held(), None);
    assert_eq!(events.held(), (0, 0));
    assert_eq!(events.in_flight(), 0);
}

#[test]
fn deletions_and_restores_are_events_of_their_own() {
    let start = Instant::now();
    let mut events = coalescer();
    events.push(change(1, "a", ChangeKind::Changed, "ann"), start);
    events.push(change(2, "a", ChangeKind::Deleted, "ann"), start);
    events.push(change(3, "a", ChangeKind::Restored, "bob"), start);
    events.push(change(4, "a", ChangeKind::Changed, "bob"), start);
    let mut sent = Vec::new();
    let mut now = start;
    for _ in 0..8 {
        for event in events.take_ready(now, 8) {
            events.done(&event.doc);
            sent.push((event.kind, event.from, event.to));
        }
        now += DEBOUNCE;
    }
    assert_eq!(
        sent,
        vec![
            (ChangeKind::Changed, 1, 1),
            (ChangeKind::Deleted, 2, 2),
            (ChangeKind::Restored, 3, 3),
            (ChangeKind::Changed, 4, 4),
        ]
    );
}

#[test]
fn the_room_bounds_events_in_flight_oldest_first() {
    let start = Instant::now();
    let mut events = coalescer();
    for position in 1..=5 {
        events.push(
            change(
                position,
                &format!("doc{position}"),
                ChangeKind::Deleted,
                "ann",
            ),
            start,
        );
    }
    let ready = events.take_ready(start, 2);
    let docs: Vec<&str> = ready.iter().map(|event| event.doc.as_str()).collect();
    assert_eq!(docs, vec!["doc1", "doc2"]);
    assert_eq!(events.in_flight(), 2);
    assert_eq!(events.held().0, 5);
}

#[test]
fn a_replayed_change_does_not_join_a_later_event() {
    let start = Instant::now();
    let mut events = coalescer();
    events.push(change(100, "a", ChangeKind::Changed, "ann"), start);
    events.push(change(50, "a", ChangeKind::Changed, "ann"), start);
    assert_eq!(events.oldest_held(), Some(50));
    let first = events.take_ready(start + DEBOUNCE, 8);
    assert_eq!((first[0].from, first[0].to), (100, 100));
    events.done("a");
    let second = events.take_ready(start + DEBOUNCE, 8);
    assert_eq!((second[0].from, second[0].to), (50, 50));
}
