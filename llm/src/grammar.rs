//! Constrained decoding: a [`Grammar`] is a byte-level state machine; at each step only the
//! tokens whose bytes keep the output inside the grammar may be sampled, and end-of-turn only
//! where the output is complete.
//!
//! The tokens are walked as a byte trie ([`TokenTrie`], built once per vocabulary), so a byte
//! the grammar refuses prunes every token that starts with it in one step.

use crate::tokenizer::{TokenId, Tokenizer};

/// A set of byte strings, as a state machine fed one byte at a time.
pub trait Grammar {
    type State: Clone;
    fn start(&self) -> Self::State;
    /// The state after `byte`, or `None` if no string of the set continues with it.
    fn advance(&self, state: &Self::State, byte: u8) -> Option<Self::State>;
    /// The output so far is a whole string of the set: end-of-turn may follow.
    fn accepts(&self, state: &Self::State) -> bool;
    /// Nothing may follow: generation stops here.
    fn finished(&self, state: &Self::State) -> bool {
        let _ = state;
        false
    }
    /// Every byte is allowed from here on (free text): the mask can be skipped.
    fn is_free(&self, state: &Self::State) -> bool {
        let _ = state;
        false
    }
}

/// Every ordinary token of a vocabulary in a byte trie (special tokens are left out: a
/// grammar never produces them; end-of-turn is handled by the caller).
#[derive(Debug, Clone)]
pub struct TokenTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// `(byte, child node)`, sorted by byte.
    children: Vec<(u8, u32)>,
    /// Tokens whose bytes end here.
    tokens: Vec<TokenId>,
}

impl TokenTrie {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let mut trie = TokenTrie {
            nodes: vec![Node::default()],
        };
        for id in 0..tokenizer.vocab_size() as TokenId {
            if !tokenizer.is_special(id) {
                trie.insert(&tokenizer.token_bytes(id), id);
            }
        }
        trie
    }

    fn insert(&mut self, bytes: &[u8], id: TokenId) {
        if bytes.is_empty() {
            return;
        }
        let mut node = 0usize;
        for &b in bytes {
            let children = &self.nodes[node].children;
            node = match children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes[node].children.insert(i, (b, next as u32));
                    self.nodes.push(Node::default());
                    next
                }
            };
        }
        self.nodes[node].tokens.push(id);
    }

    /// Every token the grammar allows from `state`, with the state after it.
    pub fn allowed<G: Grammar>(&self, grammar: &G, state: &G::State) -> Vec<(TokenId, G::State)> {
        let mut out = Vec::new();
        self.walk(grammar, 0, state, &mut out);
        out
    }

    fn walk<G: Grammar>(
        &self,
        grammar: &G,
        node: usize,
        state: &G::State,
        out: &mut Vec<(TokenId, G::State)>,
    ) {
        for &(byte, child) in &self.nodes[node].children {
            if let Some(next) = grammar.advance(state, byte) {
                let child = child as usize;
                out.extend(self.nodes[child].tokens.iter().map(|&t| (t, next.clone())));
                self.walk(grammar, child, &next, out);
            }
        }
    }
}

/// Feeds `bytes` through `grammar` from `state`.
pub fn advance_bytes<G: Grammar>(grammar: &G, state: &G::State, bytes: &[u8]) -> Option<G::State> {
    bytes
        .iter()
        .try_fold(state.clone(), |s, &b| grammar.advance(&s, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings "ab" and "abc".
    struct Words;

    impl Grammar for Words {
        type State = usize;
        fn start(&self) -> usize {
            0
        }
        fn advance(&self, &at: &usize, byte: u8) -> Option<usize> {
            (b"abc".get(at) == Some(&byte)).then_some(at + 1)
        }
        fn accepts(&self, &at: &usize) -> bool {
            at >= 2
        }
    }

    #[test]
    fn the_trie_offers_exactly_the_tokens_that_stay_in_the_grammar() {
        let mut trie = TokenTrie {
            nodes: vec![Node::default()],
        };
        for (id, t) in ["a", "ab", "abc", "b", "abd", "c"].iter().enumerate() {
            trie.insert(t.as_bytes(), id as TokenId);
        }
        let mut ids: Vec<_> = trie.allowed(&Words, &0).into_iter().collect();
        ids.sort();
        assert_eq!(ids, vec![(0, 1), (1, 2), (2, 3)]);
        let after_ab: Vec<_> = trie.allowed(&Words, &2);
        assert_eq!(after_ab, vec![(5, 3)]);
        assert!(trie.allowed(&Words, &3).is_empty());
        assert_eq!(advance_bytes(&Words, &0, b"ab"), Some(2));
        assert_eq!(advance_bytes(&Words, &0, b"b"), None);
    }
}
