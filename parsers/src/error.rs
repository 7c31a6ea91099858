//! Typed parse errors.
//!
//! Every error carries a stable, low-cardinality [`ParseError::reason`] string that the collector
//! uses as the `reason` label of `vpslens_parse_errors_total`. Reasons never contain input bytes, so
//! attacker-controlled text can never reach a label through an error.

use strum::{EnumDiscriminants, IntoStaticStr, VariantNames};
use thiserror::Error;

/// Why an access-log line (or a container-log frame) could not be turned into a record.
///
/// The `reason` label values, their order and the indices come from the variant names (strum's
/// [`EnumDiscriminants`], `snake_case`): [`ParseErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, Error, EnumDiscriminants)]
#[strum_discriminants(
    name(ParseErrorKind),
    derive(IntoStaticStr, VariantNames),
    strum(serialize_all = "snake_case"),
    doc = "The kind of a [`ParseError`] without its details; its `snake_case` name is the `reason` label value."
)]
pub enum ParseError {
    /// The line is empty or only whitespace.
    #[error("empty line")]
    Empty,
    /// The line is not valid UTF-8 (Envoy writes UTF-8; anything else is corruption).
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line starts like neither Istio's JSON (`{`) nor its TEXT format (`[`).
    #[error("unknown log format: line starts with neither '{{' nor '['")]
    UnknownFormat,
    /// JSON syntax error (including a truncated object).
    #[error("invalid JSON at column {column}")]
    JsonSyntax {
        /// 1-based column where serde_json stopped.
        column: usize,
    },
    /// A JSON value has a type no Envoy version emits for that key (e.g. an object).
    #[error("JSON key `{field}` has an unexpected type")]
    JsonType {
        /// The access-log key (one of Istio's fixed key names).
        field: &'static str,
    },
    /// The TEXT format did not match `EnvoyTextLogFormat`.
    #[error("TEXT line does not match Istio's default format: {what}")]
    TextSyntax {
        /// Which part of the format failed (static description).
        what: &'static str,
    },
    /// A required field is absent or `null`/`"-"`.
    #[error("required field `{field}` is missing")]
    MissingField {
        /// The access-log key.
        field: &'static str,
    },
    /// A numeric field is not a non-negative integer in range.
    #[error("field `{field}` is not a valid number")]
    BadNumber {
        /// The access-log key.
        field: &'static str,
    },
    /// `start_time` is not an RFC 3339 timestamp.
    #[error("`start_time` is not an RFC 3339 timestamp")]
    BadTimestamp,
    /// CRI container-log framing is malformed.
    #[error("malformed CRI container-log line: {what}")]
    CriSyntax {
        /// Which part failed (static description).
        what: &'static str,
    },
    /// Docker `json-file` container-log framing is malformed.
    #[error("malformed docker json-file line")]
    DockerSyntax,
}

impl ParseError {
    /// The stable `reason` label value for this error (`snake_case`, from a fixed set).
    ///
    /// ```
    /// use vpslens_parsers::ParseError;
    /// assert_eq!(ParseError::MissingField { field: "response_code" }.reason(), "missing_field");
    /// ```
    pub fn reason(&self) -> &'static str {
        ParseErrorKind::from(self).into()
    }

    /// Every reason [`ParseError::reason`] can return, in a fixed order (for pre-registering
    /// zero-valued series and for array indexing via [`ParseError::index`]).
    pub const REASONS: &'static [&'static str] = ParseErrorKind::VARIANTS;

    /// Position of [`ParseError::reason`] in [`ParseError::REASONS`].
    pub fn index(&self) -> usize {
        ParseErrorKind::from(self) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_reason_table() {
        let all = [
            ParseError::Empty,
            ParseError::NotUtf8,
            ParseError::UnknownFormat,
            ParseError::JsonSyntax { column: 1 },
            ParseError::JsonType { field: "x" },
            ParseError::TextSyntax { what: "x" },
            ParseError::MissingField { field: "x" },
            ParseError::BadNumber { field: "x" },
            ParseError::BadTimestamp,
            ParseError::CriSyntax { what: "x" },
            ParseError::DockerSyntax,
        ];
        for e in all {
            assert_eq!(ParseError::REASONS[e.index()], e.reason());
        }
        // The label values are an interface (dashboards, alerts): renaming a variant must
        // show up here.
        assert_eq!(
            ParseError::REASONS,
            [
                "empty",
                "not_utf8",
                "unknown_format",
                "json_syntax",
                "json_type",
                "text_syntax",
                "missing_field",
                "bad_number",
                "bad_timestamp",
                "cri_syntax",
                "docker_syntax",
            ]
        );
    }
}
