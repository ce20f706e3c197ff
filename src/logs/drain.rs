//! Drain: online log template mining with a fixed-depth parse tree (P. He, J. Zhu, Z. Zheng,
//! M. R. Lyu, "Drain: An Online Log Parsing Approach with Fixed Depth Tree", ICWS 2017), as in
//! the authors' reference implementation (logpai/logparser `Drain.py`), on messages already
//! masked and split into tokens.
//!
//! The tree: the root's children are keyed by the token count of a message; below that come
//! `depth - 3` layers keyed by the message's leading tokens (so `depth = 4` routes on the token
//! count and the first token); the nodes at the bottom hold a list of log groups. A token that
//! contains a digit never gets a child of its own: it goes to the `<*>` child, and so does any
//! token once a node has `max_children` children. A message walks down the tree (its own token,
//! else `<*>`) and joins the most similar group of the leaf if the similarity reaches `st`;
//! otherwise it starts a new group with itself as the template.
//!
//! Similarity of a template and a message of the same length: the fraction of positions where
//! the template's token equals the message's, where a `<*>` of the template never counts as
//! equal (Drain's `seqDist`); among equally similar groups the one with more `<*>` wins. When a
//! message joins a group, every position where it differs from the template becomes `<*>`.
//!
//! One departure from `Drain.py`, a fix: a message with no more tokens than the routing layers
//! (one token at `depth = 4`) is still placed in a leaf; `Drain.py` never adds its group to the
//! tree, so each such message started a group of its own. The empty message is similar (1.0) to
//! the empty template.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The wildcard token of templates (and of masked messages).
pub const WILDCARD: &str = "<*>";

/// Drain's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainSettings {
    /// Depth of the tree counting the root and the leaves (at least 3): `depth - 3` leading
    /// tokens route a message.
    pub depth: usize,
    /// Similarity threshold for joining a group, in `[0, 1]`.
    pub st: f64,
    /// Most children of a token node before further tokens go to `<*>`.
    pub max_children: usize,
}

impl Default for DrainSettings {
    /// The loghub benchmark's settings for HDFS and BGL: depth 4, st 0.5, 100 children.
    fn default() -> Self {
        Self {
            depth: 4,
            st: 0.5,
            max_children: 100,
        }
    }
}

impl DrainSettings {
    /// Checks the ranges; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        if self.depth < 3 {
            return Err(Error::field(
                "depth",
                format!(
                    "{} is below 3 (root, token count, leaf); Drain's default is 4",
                    self.depth
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.st) {
            return Err(Error::field(
                "st",
                format!(
                    "{} is not a similarity in [0, 1]; Drain's default is 0.5",
                    self.st
                ),
            ));
        }
        if self.max_children < 2 {
            return Err(Error::field(
                "max_children",
                format!(
                    "{} leaves no room beside `<*>`; Drain's default is 100",
                    self.max_children
                ),
            ));
        }
        Ok(())
    }
}

/// A log group: its template and how many messages joined it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogGroup {
    /// The template tokens; `<*>` where the group's messages differ.
    pub template: Vec<String>,
    /// Messages in the group.
    pub size: usize,
}

/// A tree node: token children (inner nodes) or groups (leaves), by index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Node {
    children: BTreeMap<String, usize>,
    groups: Vec<usize>,
}

/// The Drain miner: the tree and the groups, numbered in order of creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    settings: DrainSettings,
    /// First layer: token count -> node.
    by_length: BTreeMap<usize, usize>,
    nodes: Vec<Node>,
    groups: Vec<LogGroup>,
}

impl Drain {
    /// An empty miner; the settings are validated.
    pub fn new(settings: DrainSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Self {
            settings,
            by_length: BTreeMap::new(),
            nodes: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &DrainSettings {
        &self.settings
    }

    /// The groups, in order of creation (index = group id).
    pub fn groups(&self) -> &[LogGroup] {
        &self.groups
    }

    /// Adds a message: it joins the most similar group (whose template is generalised) or
    /// starts a new one. Returns the group id.
    pub fn add(&mut self, tokens: &[&str]) -> usize {
        if let Some(id) = self.find(tokens) {
            let group = &mut self.groups[id];
            for (t, &tok) in group.template.iter_mut().zip(tokens) {
                if t != tok {
                    *t = WILDCARD.to_string();
                }
            }
            group.size += 1;
            return id;
        }
        let id = self.groups.len();
        self.groups.push(LogGroup {
            template: tokens.iter().map(|t| t.to_string()).collect(),
            size: 1,
        });
        let leaf = self.insert_path(tokens);
        self.nodes[leaf].groups.push(id);
        id
    }

    /// The group a message would join, without changing anything; `None` if it would start a
    /// new group.
    pub fn find(&self, tokens: &[&str]) -> Option<usize> {
        let mut node = *self.by_length.get(&tokens.len())?;
        for &tok in tokens.iter().take(self.routing_layers()) {
            let children = &self.nodes[node].children;
            node = *children.get(tok).or_else(|| children.get(WILDCARD))?;
        }
        self.most_similar(&self.nodes[node].groups, tokens)
    }

    /// Checks a deserialized miner (a state file may be edited or truncated): valid settings,
    /// every node and group index in range, every leaf group as long as its length layer says.
    /// Returns what is wrong.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.settings.validate().map_err(|e| e.to_string())?;
        let node_ok = |n: usize| n < self.nodes.len();
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for (&len, &n) in &self.by_length {
            stack.push((n, len));
        }
        let mut visited = 0;
        while let Some((n, len)) = stack.pop() {
            visited += 1;
            if !node_ok(n) || visited > self.nodes.len() {
                return Err(format!("tree node {n} is out of range or on a cycle"));
            }
            for &child in self.nodes[n].children.values() {
                stack.push((child, len));
            }
            for &g in &self.nodes[n].groups {
                match self.groups.get(g) {
                    Some(group) if group.template.len() == len => {}
                    _ => return Err(format!("group {g} is missing or not {len} tokens long")),
                }
            }
        }
        Ok(())
    }

    /// Token layers between the token-count layer and the leaves (`depth` >= 3, validated).
    fn routing_layers(&self) -> usize {
        self.settings.depth - 3
    }

    /// Drain's `fastMatch`: the most similar group of a leaf if it reaches `st`.
    fn most_similar(&self, leaf: &[usize], tokens: &[&str]) -> Option<usize> {
        let mut best: Option<(usize, f64, usize)> = None;
        for &id in leaf {
            let (sim, wildcards) = similarity(&self.groups[id].template, tokens);
            let better = match best {
                None => true,
                Some((_, s, w)) => sim > s || (sim == s && wildcards > w),
            };
            if better {
                best = Some((id, sim, wildcards));
            }
        }
        best.filter(|&(_, sim, _)| sim >= self.settings.st)
            .map(|(id, _, _)| id)
    }

    /// Walks (creating nodes as needed) the path of a new group's first message; returns the
    /// leaf. `Drain.py`'s `addSeqToPrefixTree`.
    fn insert_path(&mut self, tokens: &[&str]) -> usize {
        let mut node = match self.by_length.get(&tokens.len()) {
            Some(&n) => n,
            None => {
                let n = self.new_node();
                self.by_length.insert(tokens.len(), n);
                n
            }
        };
        let max = self.settings.max_children;
        for &tok in tokens.iter().take(self.routing_layers()) {
            let children = &self.nodes[node].children;
            if let Some(&child) = children.get(tok) {
                node = child;
                continue;
            }
            let has_wildcard = children.contains_key(WILDCARD);
            let n = children.len();
            let key = if tok.chars().any(|c| c.is_ascii_digit()) {
                WILDCARD
            } else if has_wildcard {
                if n < max {
                    tok
                } else {
                    WILDCARD
                }
            } else if n + 1 < max {
                tok
            } else {
                // The last free place goes to `<*>`, where all further tokens will go.
                WILDCARD
            };
            node = self.child(node, key);
        }
        node
    }

    /// The child of `node` under `key`, created if missing.
    fn child(&mut self, node: usize, key: &str) -> usize {
        if let Some(&c) = self.nodes[node].children.get(key) {
            return c;
        }
        let c = self.new_node();
        self.nodes[node].children.insert(key.to_string(), c);
        c
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }
}

/// Drain's `seqDist`: the fraction of positions where `template` equals `tokens` (a `<*>` of
/// the template never counts), and the number of `<*>` in the template. Same lengths.
fn similarity(template: &[String], tokens: &[&str]) -> (f64, usize) {
    debug_assert_eq!(template.len(), tokens.len());
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut equal = 0;
    let mut wildcards = 0;
    for (t, &tok) in template.iter().zip(tokens) {
        if t == WILDCARD {
            wildcards += 1;
        } else if t == tok {
            equal += 1;
        }
    }
    (equal as f64 / template.len() as f64, wildcards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(d: &mut Drain, line: &str) -> usize {
        d.add(&line.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn groups_by_length_first_token_and_similarity() {
        let mut d = Drain::new(DrainSettings::default()).unwrap();
        assert_eq!(add(&mut d, "Receiving block <*> src: <*>"), 0);
        assert_eq!(add(&mut d, "Receiving block <*> src: <*>"), 0);
        assert_eq!(add(&mut d, "Deleting block <*> file <*>"), 1);
        assert_eq!(
            add(&mut d, "Receiving file <*> from: <*>"),
            2,
            "2/5 similar < 0.5"
        );
        assert_eq!(add(&mut d, "user alice logged in"), 3);
        assert_eq!(add(&mut d, "user bob logged in"), 3);
        assert_eq!(d.groups()[3].template.join(" "), "user <*> logged in");
        assert_eq!(d.groups()[3].size, 2);
        assert_eq!(d.find(&["user", "carol", "logged", "in"]), Some(3));
        assert_eq!(d.find(&["user", "carol", "logged", "out", "now"]), None);
        assert_eq!(d.groups().len(), 4, "find adds nothing");
    }

    #[test]
    fn short_messages_share_a_group() {
        let mut d = Drain::new(DrainSettings::default()).unwrap();
        assert_eq!(add(&mut d, "ready"), 0);
        assert_eq!(add(&mut d, "ready"), 0);
        assert_eq!(add(&mut d, ""), 1);
        assert_eq!(add(&mut d, ""), 1);
    }

    #[test]
    fn digit_tokens_route_to_the_wildcard_child() {
        let mut d = Drain::new(DrainSettings::default()).unwrap();
        assert_eq!(add(&mut d, "42 bytes sent"), 0);
        assert_eq!(add(&mut d, "7 bytes sent"), 0);
        assert_eq!(d.groups()[0].template.join(" "), "<*> bytes sent");
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let bad = |s: DrainSettings| Drain::new(s).unwrap_err().to_string();
        let d = DrainSettings::default();
        assert!(bad(DrainSettings {
            depth: 2,
            ..d.clone()
        })
        .contains("depth"));
        assert!(bad(DrainSettings {
            st: 1.5,
            ..d.clone()
        })
        .contains("st"));
        assert!(bad(DrainSettings { st: f64::NAN, ..d }).contains("st"));
    }
}
