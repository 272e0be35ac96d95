//! Positions in a partition, converted in one place.
//!
//! A record's place in the log is its partition and offset
//! ([`weft_sync::Position`]); reading resumes at the *next* offset, the one
//! after the last record read; librdkafka speaks [`Offset`], whose logical
//! values (beginning, end, stored, invalid) are not positions. Everything
//! that turns one into another goes through here, so "after", "next" and
//! "at" mean one thing across the bus, the replays and the worker.

use rdkafka::{Message, Offset};
use weft_sync::Position;

/// The offset after the record at `offset`: where reading resumes.
pub(crate) fn next_after(offset: i64) -> i64 {
    offset.saturating_add(1)
}

/// The next offset to read once the record at `read` was read, given the
/// next offset before it (`None`: unknown). Never backwards: a record read
/// again (a replay, a redelivery) does not move it back.
pub(crate) fn advance(next: Option<i64>, read: i64) -> i64 {
    let after = next_after(read);
    next.map_or(after, |next| next.max(after))
}

/// Where reading starts for the records after `after` (`None`: every
/// record, from the partition's first retained offset `low`).
pub(crate) fn first_after(after: Option<i64>, low: i64) -> i64 {
    after.map_or(low, next_after)
}

/// The offset of `position` if it is on `partition`: a position on another
/// partition (the topic's partition count changed since) says nothing
/// about this one.
pub(crate) fn on_partition(position: Option<Position>, partition: i32) -> Option<i64> {
    position
        .filter(|position| position.partition == partition)
        .map(|position| position.offset)
}

/// librdkafka's name for the explicit offset `offset`.
pub(crate) fn at(offset: i64) -> Offset {
    Offset::Offset(offset)
}

/// The explicit offset librdkafka holds, if it holds one (not a logical
/// offset such as the end, nor "none committed").
pub(crate) fn exact(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(offset) if offset >= 0 => Some(offset),
        _ => None,
    }
}

/// The record at `offset` of `partition`.
pub(crate) fn position(partition: i32, offset: i64) -> Position {
    Position { partition, offset }
}

/// Where a consumed record sits.
pub(crate) fn position_of(message: &impl Message) -> Position {
    position(message.partition(), message.offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_offset_never_goes_back() {
        assert_eq!(advance(None, 4), 5);
        assert_eq!(advance(Some(5), 9), 10);
        assert_eq!(advance(Some(10), 3), 10, "a record read again");
    }

    #[test]
    fn reading_after_a_position_starts_past_it() {
        assert_eq!(first_after(None, 7), 7);
        assert_eq!(first_after(Some(7), 0), 8);
    }

    #[test]
    fn a_position_on_another_partition_covers_nothing() {
        assert_eq!(on_partition(Some(position(2, 9)), 2), Some(9));
        assert_eq!(on_partition(Some(position(1, 9)), 2), None);
        assert_eq!(on_partition(None, 2), None);
    }

    #[test]
    fn only_explicit_offsets_are_positions() {
        assert_eq!(exact(at(3)), Some(3));
        assert_eq!(exact(Offset::End), None);
        assert_eq!(exact(Offset::Invalid), None);
        assert_eq!(exact(Offset::Offset(-1001)), None);
    }
}
