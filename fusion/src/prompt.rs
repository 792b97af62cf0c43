//! Prompts with a fixed head: the head (system prompt and template up to the user's turn)
//! is computed once and its KV cache kept; each frame or utterance pays only for its own
//! rows and the closing of the turn.

use llm::{Llm, LlmError, Message, Role, Segment, Session, TokenId};

/// Marks where the per-item part goes when the chat template is rendered.
const SLOT: &str = "\u{1}PERCEPT-SLOT\u{1}";

/// A chat prompt split around the place where each item's rows go.
#[derive(Debug, Clone)]
pub struct FramedPrompt {
    /// Everything before the item: the system turn and the opening of the user's turn.
    pub head: Vec<TokenId>,
    /// Everything after it: the rest of the user's turn and the opening of the answer.
    pub tail: Vec<TokenId>,
}

impl FramedPrompt {
    /// `system`, then a user turn of `before + [item rows] + after`, ready for the
    /// assistant.
    pub fn chat(lm: &Llm, system: &str, before: &str, after: &str) -> Result<Self, LlmError> {
        let text = lm.chat_prompt(&[
            Message::new(Role::System, system),
            Message::new(Role::User, format!("{before}{SLOT}{after}")),
        ])?;
        let (head, tail) = split_at_slot(&text)?;
        Ok(FramedPrompt {
            head: lm.tokenizer.encode(head, true)?,
            tail: lm.tokenizer.encode(tail, true)?,
        })
    }
}

/// A rendered prompt cut where the slot marker is; an error when the template changed the
/// user's text so that the marker is gone (upper-cased, escaped, dropped).
fn split_at_slot(text: &str) -> Result<(&str, &str), llm::chat::ChatError> {
    text.split_once(SLOT)
        .ok_or(llm::chat::ChatError::ChangesUserText)
}

/// The KV cache after a prompt's head, reused by every item.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    session: Session,
    tail: Vec<TokenId>,
}

impl PrefixCache {
    /// Runs the head through the model once.
    pub fn new(lm: &Llm, prompt: &FramedPrompt) -> Result<Self, LlmError> {
        let mut session = Session::new();
        lm.prefill(&mut session, &[Segment::Tokens(prompt.head.clone())])?;
        Ok(PrefixCache {
            session,
            tail: prompt.tail.clone(),
        })
    }

    /// Positions the head takes in the cache.
    pub fn len(&self) -> usize {
        self.session.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A session holding the head, and the segments that complete the prompt for `item`.
    pub fn start(&self, item: Segment) -> (Session, Vec<Segment>) {
        self.start_with_tail(item, &self.tail)
    }

    /// [`PrefixCache::start`] closing the turn with another tail (the `tail` of a prompt
    /// framed with the same head and a different `after`).
    pub fn start_with_tail(&self, item: Segment, tail: &[TokenId]) -> (Session, Vec<Segment>) {
        (
            self.session.clone(),
            vec![item, Segment::Tokens(tail.to_vec())],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm::ChatTemplate;

    /// Issue 15: a template that changes the user's text hit an `expect` here.
    #[test]
    fn a_template_that_changes_the_users_text_is_an_error() {
        let upper = ChatTemplate::new(
            "{% for m in messages %}{{ m.content | lower }}{% endfor %}".into(),
            "".into(),
            "".into(),
        )
        .unwrap();
        let text = upper
            .render(&[Message::new(Role::User, format!("a{SLOT}b"))], true)
            .unwrap();
        let err = split_at_slot(&text).unwrap_err().to_string();
        assert!(err.contains("does not keep the user's text"), "{err}");
        assert_eq!(split_at_slot(&format!("a{SLOT}b")).unwrap(), ("a", "b"));
    }
}
