//! Who owns which partition of the updates topic: the members of the
//! owners' group as the group coordinator describes them, decoded.
//!
//! Pure: bytes in, a [`ClusterMap`] out. Every member of the owners' group
//! sets its librdkafka `client.id` to `weft-owner:<node>@<host:port>`, so
//! the coordinator's description of the group (`DescribeGroups`) names each
//! member's node and the address it serves on; each member's assignment is
//! Kafka's `ConsumerProtocolAssignment` (the partitions it owns), and its
//! subscription carries the generation its sticky assignor last saw.

use std::collections::BTreeMap;

/// The prefix of an owner's `client.id`.
pub const OWNER_CLIENT_PREFIX: &str = "weft-owner:";

/// One node of the cluster and the partitions of the updates topic it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's `--node-id`.
    pub id: String,
    /// Where the node serves clients (`--advertise-address`, `host:port`).
    pub address: String,
    /// The updates topic's partitions it owns, ascending.
    pub partitions: Vec<i32>,
}

/// The owners' group at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMap {
    /// The group generation the assignment was made in, as its members
    /// report it (0 before any member reported one).
    pub generation: i32,
    /// The members, by id.
    pub nodes: Vec<ClusterNode>,
}

impl ClusterMap {
    /// The node that owns `partition`, if one does.
    pub fn owner(&self, partition: i32) -> Option<&ClusterNode> {
        self.nodes
            .iter()
            .find(|node| node.partitions.binary_search(&partition).is_ok())
    }
}

/// One member as the coordinator describes it.
#[derive(Debug, Clone, Copy)]
pub struct MemberBytes<'a> {
    /// Its `client.id`.
    pub client_id: &'a str,
    /// Its subscription (`ConsumerProtocolSubscription`).
    pub metadata: &'a [u8],
    /// Its assignment (`ConsumerProtocolAssignment`).
    pub assignment: &'a [u8],
}

/// The map the members describe, for `topic`. Members that are not Weft
/// owners, or whose bytes do not decode, are left out.
pub fn cluster_map(topic: &str, members: &[MemberBytes<'_>]) -> ClusterMap {
    let mut nodes: BTreeMap<String, ClusterNode> = BTreeMap::new();
    let mut generation = 0;
    for member in members {
        let Some((id, address)) = parse_client_id(member.client_id) else {
            continue;
        };
        if let Some(reported) = subscription_generation(member.metadata) {
            // A member reports the generation of its previous assignment;
            // the one it was assigned in is the next.
            generation = generation.max(reported.saturating_add(1));
        }
        let mut partitions = assigned_partitions(member.assignment, topic).unwrap_or_default();
        partitions.sort_unstable();
        partitions.dedup();
        let node = nodes.entry(id.to_owned()).or_insert_with(|| ClusterNode {
            id: id.to_owned(),
            address: address.to_owned(),
            partitions: Vec::new(),
        });
        // Two members with one node id (a node restarted before its old
        // member expired): both are listed under the id.
        node.partitions.extend(partitions);
        node.partitions.sort_unstable();
        node.partitions.dedup();
    }
    ClusterMap {
        generation,
        nodes: nodes.into_values().collect(),
    }
}

/// The `client.id` an owner with `node` id serving on `address` sets.
pub fn owner_client_id(node: &str, address: &str) -> String {
    format!("{OWNER_CLIENT_PREFIX}{node}@{address}")
}

/// (node id, address) of an owner's `client.id`. The address is after the
/// last `@` (an address has none; a node id may).
pub fn parse_client_id(client_id: &str) -> Option<(&str, &str)> {
    let rest = client_id.strip_prefix(OWNER_CLIENT_PREFIX)?;
    let (id, address) = rest.rsplit_once('@')?;
    if id.is_empty() || address.is_empty() {
        return None;
    }
    Some((id, address))
}

/// A reader of Kafka's big-endian protocol fields that never panics.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn i16(&mut self) -> Option<i16> {
        let bytes = self.take(2)?;
        Some(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        let bytes = self.take(4)?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A length-prefixed string (i16 length; -1 is null, read as empty).
    fn string(&mut self) -> Option<&'a [u8]> {
        let length = self.i16()?;
        if length < 0 {
            return Some(&[]);
        }
        self.take(usize::try_from(length).ok()?)
    }

    /// Length-prefixed bytes (i32 length; -1 is null, read as empty).
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = self.i32()?;
        if length < 0 {
            return Some(&[]);
        }
        self.take(usize::try_from(length).ok()?)
    }

    /// An array's element count, bounded by the bytes left (each element
    /// takes at least `min_element` bytes), so a forged count cannot make
    /// a caller loop or allocate past the input.
    fn count(&mut self, min_element: usize) -> Option<usize> {
        let count = self.i32()?;
        if count < 0 {
            return Some(0);
        }
        let count = usize::try_from(count).ok()?;
        (count.saturating_mul(min_element) <= self.bytes.len()).then_some(count)
    }

    /// `[topic [partition]]`: the partitions listed for `topic`.
    fn topic_partitions(&mut self, topic: &str) -> Option<Vec<i32>> {
        let mut found = Vec::new();
        let topics = self.count(6)?;
        for _ in 0..topics {
            let name = self.string()?;
            let partitions = self.count(4)?;
            for _ in 0..partitions {
                let partition = self.i32()?;
                if name == topic.as_bytes() {
                    found.push(partition);
                }
            }
        }
        Some(found)
    }
}

/// The partitions of `topic` in a `ConsumerProtocolAssignment`
/// (`version [topic [partition]] user_data`).
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut reader = Reader { bytes: assignment };
    let _version = reader.i16()?;
    reader.topic_partitions(topic)
}

/// The generation a member's subscription reports: the explicit field of
/// version 2 and later, or, where that is -1, the one librdkafka's sticky
/// assignors put at the end of their user data
/// (`[previous assignment] generation`).
pub fn subscription_generation(metadata: &[u8]) -> Option<i32> {
    let mut reader = Reader { bytes: metadata };
    let version = reader.i16()?;
    let topics = reader.count(2)?;
    for _ in 0..topics {
        let _topic = reader.string()?;
    }
    let user_data = reader.bytes()?;
    let from_user_data = user_data
        .len()
        .checked_sub(4)
        .and_then(|start| user_data.get(start..))
        .and_then(|tail| Some(i32::from_be_bytes(tail.try_into().ok()?)))
        .filter(|generation| *generation >= 0);
    let explicit = if version >= 2 {
        // Owned partitions (any topic), then the generation.
        let _owned = reader.topic_partitions("");
        reader.i32().filter(|generation| *generation >= 0)
    } else {
        None
    };
    explicit.or(from_user_data)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&i16::try_from(text.len()).unwrap().to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    fn topic_partitions(out: &mut Vec<u8>, topics: &[(&str, &[i32])]) {
        out.extend_from_slice(&i32::try_from(topics.len()).unwrap().to_be_bytes());
        for (topic, partitions) in topics {
            string(out, topic);
            out.extend_from_slice(&i32::try_from(partitions.len()).unwrap().to_be_bytes());
            for partition in *partitions {
                out.extend_from_slice(&partition.to_be_bytes());
            }
        }
    }

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = 1_i16.to_be_bytes().to_vec();
        topic_partitions(&mut out, topics);
        out.extend_from_slice(&(-1_i32).to_be_bytes());
        out
    }

    /// librdkafka's cooperative-sticky subscription (version 3).
    fn subscription(topic: &str, sticky_generation: Option<i32>, explicit: i32) -> Vec<u8> {
        let mut out = 3_i16.to_be_bytes().to_vec();
        out.extend_from_slice(&1_i32.to_be_bytes());
        string(&mut out, topic);
        let mut user_data = Vec::new();
        if let Some(generation) = sticky_generation {
            topic_partitions(&mut user_data, &[(topic, &[0, 1])]);
            user_data.extend_from_slice(&generation.to_be_bytes());
        }
        out.extend_from_slice(&i32::try_from(user_data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&user_data);
        topic_partitions(&mut out, &[(topic, &[0, 1])]);
        out.extend_from_slice(&explicit.to_be_bytes());
        string(&mut out, "");
        out
    }

    #[test]
    fn an_assignment_lists_the_partitions_of_its_topic() {
        let bytes = assignment(&[("other", &[9]), ("updates", &[3, 0, 7])]);
        assert_eq!(assigned_partitions(&bytes, "updates"), Some(vec![3, 0, 7]));
        assert_eq!(assigned_partitions(&bytes, "none"), Some(vec![]));
    }

    #[test]
    fn the_generation_comes_from_the_sticky_user_data_or_the_explicit_field() {
        assert_eq!(
            subscription_generation(&subscription("t", Some(4), -1)),
            Some(4)
        );
        assert_eq!(
            subscription_generation(&subscription("t", None, 6)),
            Some(6)
        );
        assert_eq!(subscription_generation(&subscription("t", None, -1)), None);
    }

    #[test]
    fn a_map_names_each_node_its_address_and_partitions() {
        let first = assignment(&[("updates", &[2, 0])]);
        let second = assignment(&[("updates", &[1])]);
        let sub_first = subscription("updates", Some(3), -1);
        let sub_second = subscription("updates", None, -1);
        let members = [
            MemberBytes {
                client_id: "weft-owner:b@10.0.0.2:8080",
                metadata: &sub_first,
                assignment: &first,
            },
            MemberBytes {
                client_id: "weft-owner:a@10.0.0.1:8080",
                metadata: &sub_second,
                assignment: &second,
            },
            MemberBytes {
                client_id: "someone-else",
                metadata: &[],
                assignment: &first,
            },
        ];
        let map = cluster_map("updates", &members);
        assert_eq!(map.generation, 4);
        assert_eq!(map.nodes.len(), 2, "the foreign member is left out");
        assert_eq!(map.nodes[0].id, "a");
        assert_eq!(map.nodes[0].partitions, vec![1]);
        assert_eq!(map.nodes[1].address, "10.0.0.2:8080");
        assert_eq!(map.nodes[1].partitions, vec![0, 2]);
        assert_eq!(map.owner(2).map(|node| node.id.as_str()), Some("b"));
        assert_eq!(map.owner(5), None);
    }

    #[test]
    fn client_ids_split_at_the_last_at_sign() {
        assert_eq!(
            parse_client_id(&owner_client_id("me@host", "127.0.0.1:1")),
            Some(("me@host", "127.0.0.1:1"))
        );
        assert_eq!(parse_client_id("weft-owner:@x"), None);
        assert_eq!(parse_client_id("weft-live"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = assigned_partitions(&bytes, "t");
            let _ = subscription_generation(&bytes);
        }
    }
}
