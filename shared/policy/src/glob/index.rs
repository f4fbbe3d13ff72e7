//! Finding which of many patterns match a name without trying each one.

use super::Pattern;

/// Many patterns, indexed by their literal prefix in a byte trie.
///
/// A lookup walks the name once through the trie and tries only the patterns whose literal
/// prefix is a prefix of the name, so its cost grows with the name's length and the number of
/// candidates, not with the number of patterns. `globset::GlobSet` would answer the same
/// question, but reporting every match of a large set runs its regex set over all patterns
/// that are not plain literals or prefixes, which costs microseconds at a thousand patterns.
///
/// Patterns that ignore case are filed under their lowercased prefix, and a lookup walks both
/// the name and its lowercased form, so they are found whatever the case of the name.
#[derive(Debug, Clone, Default)]
pub struct PatternIndex {
    patterns: Vec<(Pattern, usize)>,
    nodes: Vec<Node>,
    /// Whether any pattern ignores case, so lookups also walk the lowercased name.
    folds_case: bool,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children sorted by byte.
    children: Vec<(u8, u32)>,
    /// Indexes into `patterns` whose literal prefix ends at this node.
    entries: Vec<u32>,
}

impl PatternIndex {
    /// Builds an index of `(pattern, owner)` pairs; lookups report owners.
    pub fn new(patterns: Vec<(Pattern, usize)>) -> Self {
        let mut index = Self { patterns: Vec::new(), nodes: vec![Node::default()], folds_case: false };
        for (pattern, owner) in patterns {
            index.insert(pattern, owner);
        }
        index
    }

    fn insert(&mut self, pattern: Pattern, owner: usize) {
        let ignore_case = pattern.ignores_case();
        self.folds_case |= ignore_case;
        let mut node = 0usize;
        for byte in pattern.literal_prefix().bytes() {
            let byte = if ignore_case { byte.to_ascii_lowercase() } else { byte };
            node = self.child_or_insert(node, byte);
        }
        let entry = u32::try_from(self.patterns.len()).unwrap_or(u32::MAX);
        if let Some(target) = self.nodes.get_mut(node) {
            target.entries.push(entry);
        }
        self.patterns.push((pattern, owner));
    }

    fn child_or_insert(&mut self, node: usize, byte: u8) -> usize {
        let next = self.nodes.len();
        let Some(current) = self.nodes.get_mut(node) else { return 0 };
        match current.children.binary_search_by_key(&byte, |(b, _)| *b) {
            Ok(position) => current.children.get(position).map_or(0, |(_, child)| *child as usize),
            Err(position) => {
                current.children.insert(position, (byte, u32::try_from(next).unwrap_or(u32::MAX)));
                self.nodes.push(Node::default());
                next
            }
        }
    }

    /// Sets `owners` to the owners of every pattern matching `name`, sorted, without repeats.
    pub fn owners_matching(&self, name: &str, owners: &mut Vec<usize>) {
        owners.clear();
        self.walk(name, name.bytes(), owners);
        if self.folds_case && name.bytes().any(|byte| byte.is_ascii_uppercase()) {
            self.walk(name, name.bytes().map(|byte| byte.to_ascii_lowercase()), owners);
        }
        owners.sort_unstable();
        owners.dedup();
    }

    /// Follows `path` through the trie, appending the owner of every pattern on the way that
    /// matches `name`.
    fn walk(&self, name: &str, mut path: impl Iterator<Item = u8>, owners: &mut Vec<usize>) {
        let mut node = self.nodes.first();
        while let Some(current) = node {
            for entry in &current.entries {
                if let Some((pattern, owner)) = self.patterns.get(*entry as usize)
                    && pattern.is_match(name)
                {
                    owners.push(*owner);
                }
            }
            node = path.next().and_then(|byte| {
                let position = current.children.binary_search_by_key(&byte, |(b, _)| *b).ok()?;
                let (_, child) = current.children.get(position)?;
                self.nodes.get(*child as usize)
            });
        }
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether the index holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(patterns: &[&str]) -> PatternIndex {
        let pairs = patterns.iter().enumerate().map(|(owner, source)| (Pattern::new(source).unwrap(), owner)).collect();
        PatternIndex::new(pairs)
    }

    #[test]
    fn lookup_table() {
        let index = index(&["*", "search.*", "search.web", "calendar.*", "cal?ndar.x", "search.[wd]*", "s*"]);
        let cases: [(&str, &[usize]); 5] = [
            ("search.web", &[0, 1, 2, 5, 6]),
            ("search.maps", &[0, 1, 6]),
            ("calendar.x", &[0, 3, 4]),
            ("", &[0]),
            ("searc", &[0, 6]),
        ];
        let mut owners = Vec::new();
        for (name, expected) in cases {
            index.owners_matching(name, &mut owners);
            assert_eq!(owners, expected, "{name}");
        }
    }
}
