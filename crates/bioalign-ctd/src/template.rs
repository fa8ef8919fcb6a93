//! Prompt templates: the sentence template, the reference's Alpaca training
//! template and zero-shot template (exact text from SPEC.md sections 1-3), and
//! user templates with `{gene}`, `{disease}`, `{text}`, `{answer}` placeholders
//! (`{{` and `}}` stand for literal braces).

use crate::error::{Error, Result};

/// The reference's statement: `"{gene} is associated with {disease}"`.
pub const SENTENCE_TEMPLATE: &str = "{gene} is associated with {disease}";

/// The reference's Alpaca training template; the tokenizer's end-of-sequence
/// token follows the answer (see [`alpaca_training_text`]).
pub const ALPACA_TEMPLATE: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nDetermine if the following gene-disease association is true or false.\n\n### Input:\n{text}\n\n### Response:\n{answer}";

/// The reference's zero-shot prompt.
pub const ZERO_SHOT_TEMPLATE: &str =
    "Is this statement true or false? Answer with one word.\n{text}\nAnswer:";

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{gene}`: the gene symbol.
    Gene,
    /// `{disease}`: the disease name.
    Disease,
    /// `{text}`: the statement.
    Text,
    /// `{answer}`: `true` or `false`.
    Answer,
}

impl Placeholder {
    fn name(self) -> &'static str {
        match self {
            Placeholder::Gene => "gene",
            Placeholder::Disease => "disease",
            Placeholder::Text => "text",
            Placeholder::Answer => "answer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Placeholder),
}

/// The values a template is rendered with; `None` where not available.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// Gene symbol.
    pub gene: Option<&'a str>,
    /// Disease name.
    pub disease: Option<&'a str>,
    /// Statement text.
    pub text: Option<&'a str>,
    /// Answer word.
    pub answer: Option<&'a str>,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`, rejecting unknown placeholders and unbalanced braces.
    pub fn parse(source: &str) -> Result<Self> {
        let err = |reason: String| Error::Template {
            template: source.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(err(format!("'{{' at byte {i} is never closed")));
                    };
                    let name = &rest[..end];
                    let var = match name {
                        "gene" => Placeholder::Gene,
                        "disease" => Placeholder::Disease,
                        "text" => Placeholder::Text,
                        "answer" => Placeholder::Answer,
                        _ => {
                            return Err(err(format!(
                                "unknown placeholder {{{name}}} (expected {{gene}}, {{disease}}, {{text}} or {{answer}})"
                            )));
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var));
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(err(format!(
                        "unmatched '}}' at byte {i} (write '}}}}' for a literal brace)"
                    )));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// A template for the statement itself: only `{gene}` and `{disease}` are
    /// allowed (`{answer}` would leak the label into the text).
    pub fn parse_sentence(source: &str) -> Result<Self> {
        let t = Self::parse(source)?;
        if let Some(p) = t
            .placeholders()
            .find(|p| !matches!(p, Placeholder::Gene | Placeholder::Disease))
        {
            return Err(Error::Template {
                template: source.to_string(),
                reason: format!(
                    "a sentence template may only use {{gene}} and {{disease}}, not {{{}}}",
                    p.name()
                ),
            });
        }
        Ok(t)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Placeholders used, in order (with repeats).
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Lit(_) => None,
        })
    }

    /// Renders with `fields`; a placeholder without a value is an error.
    pub fn render(&self, fields: &Fields<'_>) -> Result<String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => {
                    let value = match v {
                        Placeholder::Gene => fields.gene,
                        Placeholder::Disease => fields.disease,
                        Placeholder::Text => fields.text,
                        Placeholder::Answer => fields.answer,
                    };
                    out.push_str(value.ok_or_else(|| Error::Template {
                        template: self.source.clone(),
                        reason: format!("no value for {{{}}}", v.name()),
                    })?);
                }
            }
        }
        Ok(out)
    }
}

/// `"true"` for label 1, `"false"` otherwise.
pub fn answer_word(label: u8) -> &'static str {
    if label == 1 { "true" } else { "false" }
}

/// The reference's training text for one statement: the Alpaca template with the
/// answer, followed by `eos` (the tokenizer's end-of-sequence token text).
pub fn alpaca_training_text(text: &str, label: u8, eos: &str) -> String {
    let mut s = ALPACA_TEMPLATE
        .replace("{text}", text)
        .replace("{answer}", answer_word(label));
    s.push_str(eos);
    s
}

/// The reference's zero-shot prompt for one statement.
pub fn zero_shot_prompt(text: &str) -> String {
    ZERO_SHOT_TEMPLATE.replace("{text}", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_template_gives_reference_text() {
        let t = Template::parse_sentence(SENTENCE_TEMPLATE).unwrap();
        let s = t
            .render(&Fields {
                gene: Some("A"),
                disease: Some("Diabetes Mellitus, Type 2"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s, "A is associated with Diabetes Mellitus, Type 2");
    }

    #[test]
    fn alpaca_and_zero_shot_match_spec_text() {
        let s = alpaca_training_text("WNK1 is associated with Hypertension", 1, "</s>");
        assert!(
            s.starts_with("Below is an instruction that describes a task, paired with an input")
        );
        assert!(s.ends_with(
            "### Input:\nWNK1 is associated with Hypertension\n\n### Response:\ntrue</s>"
        ));
        assert!(alpaca_training_text("x", 0, "").ends_with("### Response:\nfalse"));
        assert_eq!(
            zero_shot_prompt("X is associated with Y"),
            "Is this statement true or false? Answer with one word.\nX is associated with Y\nAnswer:"
        );
        // The generic engine renders the same Alpaca text.
        let t = Template::parse(ALPACA_TEMPLATE).unwrap();
        let r = t
            .render(&Fields {
                text: Some("x"),
                answer: Some("false"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r, alpaca_training_text("x", 0, ""));
    }

    #[test]
    fn user_templates_and_errors() {
        let t = Template::parse("Q: does {gene} cause {disease}? {{literal}} A: {answer}").unwrap();
        let r = t
            .render(&Fields {
                gene: Some("G"),
                disease: Some("D"),
                answer: Some("true"),
                text: None,
            })
            .unwrap();
        assert_eq!(r, "Q: does G cause D? {literal} A: true");
        assert!(matches!(
            Template::parse("{genes}"),
            Err(Error::Template { .. })
        ));
        assert!(matches!(
            Template::parse("open {gene"),
            Err(Error::Template { .. })
        ));
        assert!(matches!(
            Template::parse("close }"),
            Err(Error::Template { .. })
        ));
        assert!(matches!(
            Template::parse_sentence("{gene} {answer}"),
            Err(Error::Template { .. })
        ));
        assert!(matches!(
            t.render(&Fields::default()),
            Err(Error::Template { .. })
        ));
        let unicode = Template::parse("é{gene}ü").unwrap();
        assert_eq!(
            unicode
                .render(&Fields {
                    gene: Some("x"),
                    ..Default::default()
                })
                .unwrap(),
            "éxü"
        );
    }
}
