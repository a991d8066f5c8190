//! `s2iam inject` on a YAML stream: the stream is cut into its documents at their
//! `---` lines, each document parsed on its own; one that [`super::mutate`] changes
//! is written anew (keys sorted, as `kubectl get -o yaml` writes them; the comment
//! lines it starts with are kept, the others are lost), every other document is copied through as its original bytes.
//!
//! The crate: `yaml_serde`, the YAML organisation's maintained continuation of
//! `serde_yaml` (deprecated since 2024), pure Rust (libyaml-rs). Measured with
//! `cargo build --release` of the binary: +1 crate tree (`libyaml-rs`, `yaml_serde`;
//! `indexmap` and `itoa` were already in), 95 KiB of binary (6.48 → 6.58 MB), about
//! 6 s of one core to build. `serde-saphyr` needs Rust 1.89 (the crate's floor is
//! 1.88); `serde_yml` is unmaintained.

use serde_json::Value;

use super::inject::{mutate, InjectError, Options, Outcome};

/// Why a stream cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// A document is not YAML.
    #[error("document {index} (line {line}): not valid YAML: {message}")]
    Parse {
        /// 1-based document number.
        index: usize,
        /// 1-based line of the document's start in the stream.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A document could not be injected.
    #[error("document {index}: {source}")]
    Inject {
        /// 1-based document number.
        index: usize,
        /// What is wrong.
        source: InjectError,
    },
    /// A mutated document cannot be written as YAML (not expected).
    #[error("document {index}: cannot write YAML: {message}")]
    Write {
        /// 1-based document number.
        index: usize,
        /// The serialiser's message.
        message: String,
    },
}

/// What [`inject_stream`] did, per document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One outcome per document (empty documents count as not annotated).
    pub outcomes: Vec<Outcome>,
}

/// One document of a stream: its leading separator line (if any) and its body.
struct Document<'a> {
    separator: &'a str,
    body: &'a str,
    line: usize,
}

/// Cuts a stream at its `---` lines (a line that is `---` alone or followed by a
/// space or tab: a document start marker; anything else starting with `---` is
/// content).
fn documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut separator_end = 0usize;
    let mut line_no = 1usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker {
            if offset > 0 {
                docs.push(Document {
                    separator: &text[start..separator_end],
                    body: &text[separator_end..offset],
                    line: start_line,
                });
            }
            start = offset;
            separator_end = offset.saturating_add(line.len());
            start_line = line_no;
        }
        offset = offset.saturating_add(line.len());
        line_no = line_no.saturating_add(1);
    }
    docs.push(Document {
        separator: &text[start..separator_end],
        body: &text[separator_end..],
        line: start_line,
    });
    docs
}

/// The comment and blank lines a document starts with (kept above a rewritten one).
fn leading_comments(body: &str) -> &str {
    let mut end = 0usize;
    for line in body.split_inclusive('\n') {
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        end = end.saturating_add(line.len());
    }
    body.get(..end).unwrap_or_default()
}

/// Injects every document of `text` that asks for it; see the module documentation.
pub fn inject_stream(text: &str, options: &Options) -> Result<(String, Report), YamlError> {
    let mut out = String::with_capacity(text.len());
    let mut outcomes = Vec::new();
    for (i, doc) in documents(text).into_iter().enumerate() {
        let index = i.saturating_add(1);
        let parsed: Option<Value> =
            yaml_serde::from_str(doc.body).map_err(|e| YamlError::Parse {
                index,
                line: doc.line,
                message: e.to_string(),
            })?;
        let mut value = match parsed {
            Some(v) if v.is_object() => v,
            _ => {
                out.push_str(doc.separator);
                out.push_str(doc.body);
                outcomes.push(Outcome::NotAnnotated);
                continue;
            }
        };
        let outcome =
            mutate(&mut value, options).map_err(|source| YamlError::Inject { index, source })?;
        outcomes.push(outcome);
        out.push_str(doc.separator);
        if outcome == Outcome::Injected {
            out.push_str(leading_comments(doc.body));
            let written = yaml_serde::to_string(&value).map_err(|e| YamlError::Write {
                index,
                message: e.to_string(),
            })?;
            out.push_str(&written);
        } else {
            out.push_str(doc.body);
        }
    }
    Ok((out, Report { outcomes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_cut_at_markers_only() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: '---'\n---x: 3\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].separator, "");
        assert_eq!(docs[0].body, "a: 1\n");
        assert_eq!(docs[1].separator, "---\n");
        assert_eq!(docs[2].separator, "--- # c\n");
        assert_eq!(docs[2].body, "c: '---'\n---x: 3\n");
        let joined: String = docs
            .iter()
            .map(|d| format!("{}{}", d.separator, d.body))
            .collect();
        assert_eq!(joined, text);
        assert_eq!(documents("---\na: 1\n").len(), 1);
    }

    #[test]
    fn a_stream_without_annotations_comes_out_byte_identical() {
        let text = "# comment\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: a, image: b}]\n---\n\n--- \n# only a comment\n";
        let (out, report) = inject_stream(text, &Options::default()).unwrap();
        assert_eq!(out, text);
        assert!(report.outcomes.iter().all(|o| *o == Outcome::NotAnnotated));
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let e = inject_stream("a: 1\n---\nb: [\n", &Options::default()).unwrap_err();
        assert!(
            matches!(
                e,
                YamlError::Parse {
                    index: 2,
                    line: 2,
                    ..
                }
            ),
            "{e}"
        );
    }
}
