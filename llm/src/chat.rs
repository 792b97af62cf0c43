//! The chat template from `tokenizer.chat_template`, rendered as Jinja.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("chat template: {0:#}")]
    Template(#[from] Error),
    #[error(
        "the chat template does not keep the user's text as it is, so the prompt cannot be framed around it"
    )]
    ChangesUserText,
}

/// Instructions a chat template may run per rendering: a real one takes a few thousand; a
/// crafted one with nested loops would otherwise run for ever.
pub const FUEL: u64 = 1_000_000;

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A compiled chat template with the model's BOS and EOS strings.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Reads `tokenizer.chat_template` and the BOS/EOS token strings from a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ChatError> {
        let source = gguf.require_str("tokenizer.chat_template")?.to_owned();
        let token = |key: &str| -> String {
            let id = gguf.get(key).and_then(|v| v.as_u64());
            let tokens = gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
            match (id, tokens) {
                (Some(id), Some(t)) => t
                    .get(id as usize)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            }
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        );
        Self::new(source, bos, eos)
    }

    pub fn new(source: String, bos: String, eos: String) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        // Hugging Face templates call raise_exception() on unsupported conversations.
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source)?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders a conversation; with `add_generation_prompt` it ends with the header of
    /// the assistant's turn, ready for generation.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self.env.get_template("chat")?;
        Ok(tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_loop_and_generation_prompt() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}"
                .into(),
            "<s>".into(),
            "</s>".into(),
        )
        .unwrap();
        let out = t.render(&[Message::new(Role::User, "hi")], true).unwrap();
        assert_eq!(out, "<user>hi</s><assistant>");
    }

    /// Issue 15: minijinja ran templates without fuel, so nested loops hung the process.
    #[test]
    fn a_template_that_loops_for_ever_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
                .into(),
            "".into(),
            "".into(),
        )
        .unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t =
            ChatTemplate::new("{{ raise_exception('no') }}".into(), "".into(), "".into()).unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("no"), "{err}");
    }
}
