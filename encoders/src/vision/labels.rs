//! ImageNet-1k class names: the synset ids in class order (`imagenet_synsets.txt`) and
//! WordNet's lemmas for each (`imagenet_synset_to_lemma.txt`), both from timm. A class's
//! short name is its first lemma ("tabby, tabby cat" -> "tabby").

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Labels {
    /// Short name per class.
    names: Vec<String>,
    /// Every lemma per class, for matching words against a class.
    lemmas: Vec<Vec<String>>,
}

fn read(path: &Path) -> Result<String, LabelError> {
    std::fs::read_to_string(path).map_err(|source| LabelError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl Labels {
    pub fn load(synsets: &Path, lemmas: &Path) -> Result<Self, LabelError> {
        let ids: Vec<String> = read(synsets)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let lemma_text = read(lemmas)?;
        let mut by_id: HashMap<&str, &str> = HashMap::new();
        for line in lemma_text.lines() {
            if let Some((id, words)) = line.split_once('\t') {
                by_id.insert(id, words);
            }
        }
        let mut names = Vec::with_capacity(ids.len());
        let mut all = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let words = by_id.get(id.as_str()).ok_or_else(|| LabelError::Invalid {
                path: lemmas.display().to_string(),
                line: i + 1,
                reason: format!("synset {id} (class {i}) has no lemma"),
            })?;
            let list: Vec<String> = words.split(',').map(|w| w.trim().to_owned()).collect();
            names.push(list[0].clone());
            all.push(list);
        }
        Ok(Labels { names, lemmas: all })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, class: usize) -> &str {
        self.names.get(class).map_or("unknown", String::as_str)
    }

    pub fn lemmas(&self, class: usize) -> &[String] {
        self.lemmas.get(class).map_or(&[], Vec::as_slice)
    }
}
