//! The quorum decision: does a set of present nodes hold quorum under the configured rules?
//!
//! This is a pure function of three things: the configuration (nodes, votes, quorum options), the nodes
//! present in the view being judged, and one bit of history, whether all configured nodes have been seen
//! together in one view since the agent started. It keeps no state; the membership state machine tracks
//! that bit and asks again whenever a view changes. The rules follow corosync's votequorum.
//!
//! **What it deliberately does not do:** it does not look at epochs (a node counts once, whatever its
//! incarnation), it does not decide who wins a fence race in two-node mode (the fencing gate does), and it
//! does not validate the configuration ([`Config::validate`] does; here an invalid configuration only ever
//! errs towards *not* quorate).
//!
//! Entry point: [`is_quorate`]; [`expected_votes`], [`present_votes`] and [`all_present`] are its parts,
//! public for status output.

use crate::config::Config;
use crate::types::NodeId;
use std::collections::BTreeSet;

/// Everything the decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct QuorumInput<'a> {
    /// The cluster configuration: nodes with their votes, and the quorum options.
    pub config: &'a Config,
    /// The nodes present in the view being judged. Order and duplicates do not matter; nodes that are
    /// not configured count for nothing.
    pub present: &'a [NodeId],
    /// True once all configured nodes have been seen together in one view since the agent started.
    /// Only `wait_for_all` and `two_node` look at it.
    pub seen_all_once: bool,
}

/// The votes a majority is measured against: `quorum.expected_votes` when set, otherwise the sum of the
/// configured nodes' votes (saturating, so absurd vote counts cannot wrap into a small number).
pub fn expected_votes(config: &Config) -> u32 {
    config
        .quorum
        .expected_votes
        .unwrap_or_else(|| config.nodes.iter().fold(0u32, |sum, n| sum.saturating_add(n.votes)))
}

/// The votes of the configured nodes in `present`, each node counted once; unknown nodes count 0.
///
/// Counting each node once matters: a view lists a node once, but a caller that passes, say, every member
/// it heard from could name a node twice, and a doubled vote could make two sides both look like a majority.
pub fn present_votes(config: &Config, present: &[NodeId]) -> u32 {
    let distinct: BTreeSet<NodeId> = present.iter().copied().collect();
    distinct.into_iter().fold(0u32, |sum, node| sum.saturating_add(config.votes_of(node)))
}

/// True when every configured node is in `present` (vacuously true for a configuration without nodes).
pub fn all_present(config: &Config, present: &[NodeId]) -> bool {
    config.nodes.iter().all(|n| present.contains(&n.id))
}

/// Whether the present nodes hold quorum. The rules, in the order they are applied:
///
/// 1. **Zero expected votes is never quorate.** Half of nothing is no majority, and a configuration
///    mistake (`expected_votes = 0`, or every node with 0 votes) must not make every partition primary.
/// 2. **`wait_for_all` withholds quorum until all configured nodes have been seen together once**
///    (`seen_all_once`, or all of them present in the view being judged). A node that starts alone, or a
///    cluster that starts split, cannot tell whether the other side already formed a primary component;
///    waiting for everyone once means a freshly started cluster never begins with two primaries. After that
///    the normal rules below apply.
/// 3. **`two_node` implies `wait_for_all`**, as in corosync: at first start, quorum is withheld until both
///    nodes have been seen once, because otherwise two nodes booting without a network would both go
///    primary before either could fence the other.
/// 4. **`two_node` with exactly two configured nodes: one present node with votes is quorate on its own.**
///    With two nodes a strict majority needs both, so any single failure would stop the cluster. Both sides
///    of a split therefore stay quorate and the fence race decides which survives; that is safe only
///    because the fencing gate keeps a side from acting until the other is fenced. With any other number
///    of nodes (which [`Config::validate`] rejects) this rule is ignored, while rule 3 still holds: an
///    invalid configuration falls back to the stricter behaviour.
/// 5. **Otherwise a strict majority: present votes × 2 > expected votes.** Two disjoint sets of nodes cannot
///    both hold more than half of the votes, so at most one partition is primary. Exactly half (two of four
///    nodes) is not enough, since the other half could claim it too. An `expected_votes` below the sum of
///    the configured votes weakens this guarantee, which is the operator's choice to make.
pub fn is_quorate(input: &QuorumInput) -> bool {
    let config = input.config;
    let expected = expected_votes(config);
    if expected == 0 {
        return false;
    }
    let options = &config.quorum;
    let seen_all = input.seen_all_once || all_present(config, input.present);
    if (options.wait_for_all || options.two_node) && !seen_all {
        return false;
    }
    let present = present_votes(config, input.present);
    if options.two_node && config.nodes.len() == 2 {
        return present > 0;
    }
    u64::from(present) * 2 > u64::from(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeSpec;

    /// One line of `tests/testdata/quorum.txt`.
    struct Case {
        line: usize,
        text: String,
        config: Config,
        present: Vec<NodeId>,
        seen_all: bool,
        quorate: bool,
    }

    fn ids(list: &str) -> Vec<u32> {
        if list == "-" {
            return Vec::new();
        }
        list.split(',').map(|n| n.parse().unwrap_or_else(|_| panic!("bad node id {n:?}"))).collect()
    }

    fn flag(value: &str) -> bool {
        match value {
            "0" => false,
            "1" => true,
            other => panic!("bad flag {other:?}, expected 0 or 1"),
        }
    }

    /// Parses `nodes=1:1,2:1 present=1 two_node=0 wait_for_all=0 seen_all=0 expected=- => quorate`.
    fn parse(line: usize, text: &str) -> Case {
        let (inputs, outcome) = text.split_once(" => ").unwrap_or_else(|| panic!("line {line}: no ` => `"));
        let quorate = match outcome.trim() {
            "quorate" => true,
            "inquorate" => false,
            other => panic!("line {line}: outcome {other:?}, expected quorate or inquorate"),
        };
        let mut config = Config::new("test", &[]);
        let mut present = None;
        let mut seen_all = None;
        let mut seen_keys = Vec::new();
        for field in inputs.split_whitespace() {
            let (key, value) =
                field.split_once('=').unwrap_or_else(|| panic!("line {line}: bad field {field:?}"));
            assert!(!seen_keys.contains(&key), "line {line}: {key} given twice");
            seen_keys.push(key);
            match key {
                "nodes" if value == "-" => {}
                "nodes" => {
                    for spec in value.split(',') {
                        let (id, votes) =
                            spec.split_once(':').unwrap_or_else(|| panic!("line {line}: bad node {spec:?}"));
                        config.nodes.push(NodeSpec {
                            id: NodeId(id.parse().unwrap_or_else(|_| panic!("line {line}: bad id {id:?}"))),
                            votes: votes
                                .parse()
                                .unwrap_or_else(|_| panic!("line {line}: bad votes {votes:?}")),
                        });
                    }
                }
                "present" => present = Some(ids(value).into_iter().map(NodeId).collect()),
                "two_node" => config.quorum.two_node = flag(value),
                "wait_for_all" => config.quorum.wait_for_all = flag(value),
                "seen_all" => seen_all = Some(flag(value)),
                "expected" if value == "-" => config.quorum.expected_votes = None,
                "expected" => {
                    let votes =
                        value.parse().unwrap_or_else(|_| panic!("line {line}: bad expected {value:?}"));
                    config.quorum.expected_votes = Some(votes);
                }
                other => panic!("line {line}: unknown key {other:?}"),
            }
        }
        for key in ["nodes", "present", "two_node", "wait_for_all", "seen_all", "expected"] {
            assert!(seen_keys.contains(&key), "line {line}: {key} missing");
        }
        Case {
            line,
            text: text.to_string(),
            config,
            present: present.unwrap_or_default(),
            seen_all: seen_all.unwrap_or_default(),
            quorate,
        }
    }

    fn cases() -> Vec<Case> {
        include_str!("../tests/testdata/quorum.txt")
            .lines()
            .enumerate()
            .map(|(i, text)| (i + 1, text.trim()))
            .filter(|(_, text)| !text.is_empty() && !text.starts_with('#'))
            .map(|(line, text)| parse(line, text))
            .collect()
    }

    #[test]
    fn quorum_table() {
        let cases = cases();
        assert!(cases.len() >= 25, "the table has only {} cases", cases.len());
        let failures: Vec<String> = cases
            .iter()
            .filter(|c| {
                let input = QuorumInput { config: &c.config, present: &c.present, seen_all_once: c.seen_all };
                is_quorate(&input) != c.quorate
            })
            .map(|c| format!("quorum.txt:{}: {}", c.line, c.text))
            .collect();
        assert!(failures.is_empty(), "wrong decisions:\n{}", failures.join("\n"));
    }

    #[test]
    fn expected_votes_is_the_override_or_the_sum() {
        let mut config = Config::new("t", &[1, 2, 3]);
        config.nodes[0].votes = 3;
        assert_eq!(expected_votes(&config), 5);
        config.quorum.expected_votes = Some(7);
        assert_eq!(expected_votes(&config), 7);
        config.quorum.expected_votes = None;
        config.nodes[1].votes = u32::MAX;
        assert_eq!(expected_votes(&config), u32::MAX);
    }

    #[test]
    fn present_votes_counts_configured_nodes_once() {
        let mut config = Config::new("t", &[1, 2, 3]);
        config.nodes[1].votes = 2;
        assert_eq!(present_votes(&config, &[NodeId(2), NodeId(2), NodeId(9), NodeId(3)]), 3);
        assert_eq!(present_votes(&config, &[]), 0);
    }

    #[test]
    fn all_present_needs_every_configured_node() {
        let config = Config::new("t", &[1, 2]);
        assert!(all_present(&config, &[NodeId(2), NodeId(1), NodeId(7)]));
        assert!(!all_present(&config, &[NodeId(1), NodeId(1)]));
    }

    /// The safety property behind the majority rule, checked exhaustively for up to five nodes with
    /// 0 to 2 votes each: two disjoint sets of nodes are never both quorate (outside two-node mode).
    #[test]
    fn two_disjoint_sides_are_never_both_quorate() {
        for n in 1..=5u32 {
            let ids: Vec<u32> = (1..=n).collect();
            for weights in 0..3u32.pow(n) {
                let mut config = Config::new("t", &ids);
                for (i, node) in config.nodes.iter_mut().enumerate() {
                    node.votes = weights / 3u32.pow(i as u32) % 3;
                }
                for wait_for_all in [false, true] {
                    config.quorum.wait_for_all = wait_for_all;
                    // Each node goes to side a, side b, or neither.
                    for split in 0..3u32.pow(n) {
                        let side = |s: u32| -> Vec<NodeId> {
                            (0..n).filter(|i| split / 3u32.pow(*i) % 3 == s).map(|i| NodeId(i + 1)).collect()
                        };
                        let (a, b) = (side(1), side(2));
                        let quorate = |present: &[NodeId]| {
                            is_quorate(&QuorumInput { config: &config, present, seen_all_once: true })
                        };
                        assert!(!(quorate(&a) && quorate(&b)), "{config:?}: {a:?} and {b:?} both quorate");
                    }
                }
            }
        }
    }
}
