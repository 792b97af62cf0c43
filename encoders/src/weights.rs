//! What every weight-file reader says when a model asks for a tensor the file does not
//! have, or has in another shape: one wording for all formats.

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("the weight file has no tensor '{0}'")]
    Missing(String),
    #[error("tensor '{name}' has shape {got:?}, the model needs {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
}
