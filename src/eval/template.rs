//! `{field}` templates: the doc-to-text, doc-to-target and doc-to-choice of a task file,
//! rendered against one document (a JSON object). `{{` and `}}` are literal braces. This is the
//! subset of lm-eval's Jinja templates its built-in tasks need once their data sets are in our
//! `{"question", "choices", "label"}` form; a field holding a list is only usable as a whole
//! choice list (`doc_to_choice = "{choices}"`).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    /// Literal text.
    Lit(String),
    /// The value of a document field.
    Field(String),
}

/// A parsed template, remembering where it was written (task file, key, line) for errors.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
    /// The template text as written.
    pub source: String,
    /// Where it was written: `"{task file}:{line}: {key}"`.
    pub origin: String,
}

/// A document of a data file: its fields and where it came from.
#[derive(Clone, Debug)]
pub struct Doc {
    /// The record's fields.
    pub fields: Map<String, Value>,
    /// The data file.
    pub file: std::path::PathBuf,
    /// 1-based line of the record in that file.
    pub line: usize,
}

impl Template {
    /// Parses `source`; `origin` names the task file, line and key for errors.
    pub fn parse(source: &str, origin: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = source.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(Error::field(
                                    origin,
                                    format!("`{{{name}` is not closed; write `{{field}}`, or `{{{{` for a brace"),
                                ))
                            }
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(Error::field(origin, "`{}` names no field"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => {
                    return Err(Error::field(
                        origin,
                        "a lone `}`; write `}}` for a literal brace",
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            parts,
            source: source.to_string(),
            origin: origin.to_string(),
        })
    }

    /// The fields the template names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// When the template names exactly one field (`"{choices}"`, `" {choices}"`), that field.
    pub fn single_field(&self) -> Option<&str> {
        let mut fields = self.fields();
        match (fields.next(), fields.next()) {
            (Some(f), None) => Some(f),
            _ => None,
        }
    }

    /// The template with `name` replaced by `value` (one element of a list field) and any
    /// other field from `doc`.
    pub fn render_over(&self, doc: &Doc, name: &str, value: &str) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Field(f) if f == name => out.push_str(value),
                Part::Field(_) => return self.render(doc),
                Part::Lit(s) => out.push_str(s),
            }
        }
        Ok(out)
    }

    /// The template filled from `doc`: strings inserted as they are, numbers and booleans as
    /// written in JSON. A field the document lacks, or one holding a list or an object, is an
    /// error naming the template (task file, line, key), the field and the data file and line.
    pub fn render(&self, doc: &Doc) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => match field(doc, f, self)? {
                    Value::String(s) => out.push_str(s),
                    v @ (Value::Number(_) | Value::Bool(_)) => out.push_str(&v.to_string()),
                    _ => {
                        return Err(Error::field(
                            &self.origin,
                            format!(
                                "field `{f}` of {} line {} is not a string or a number; only \
                                 `doc_to_choice` may name a list",
                                doc.file.display(),
                                doc.line
                            ),
                        ))
                    }
                },
            }
        }
        Ok(out)
    }
}

/// `doc[name]`, or an error naming the template, the field and the record.
pub fn field<'a>(doc: &'a Doc, name: &str, t: &Template) -> Result<&'a Value> {
    doc.fields
        .get(name)
        .ok_or_else(|| missing(doc, name, &t.origin))
}

fn missing(doc: &Doc, name: &str, origin: &str) -> Error {
    let mut have: Vec<&str> = doc.fields.keys().map(String::as_str).collect();
    have.sort_unstable();
    Error::field(
        origin,
        format!(
            "the template names field `{name}`, which {} line {} lacks (its fields: {}); fix \
             the template or the data",
            doc.file.display(),
            doc.line,
            have.join(", ")
        ),
    )
}

/// `"{file}:{line}: {key}"`, the origin of a template.
pub fn origin(file: &Path, line: usize, key: &str) -> String {
    format!("{}:{line}: {key}", file.display())
}
