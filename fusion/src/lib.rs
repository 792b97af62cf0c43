//! Projectors from encoder outputs to LM prefix embeddings. Filled by the vision issue.
