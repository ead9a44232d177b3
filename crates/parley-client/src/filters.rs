//! On-device filters (docs/SAFETY.md): keyword and regular-expression lists and link warnings,
//! applied before a message is displayed. A match hides the message behind a warning that the
//! user can lift; nothing about it is sent anywhere.
//!
//! Cost is bounded: patterns are at most [`MAX_PATTERN_LEN`] bytes, at most [`MAX_RULES`] rules,
//! and regular expressions compile under a size limit (the `regex` crate matches in linear time,
//! with no backtracking).

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::error::ClientError;

/// The shipped default list (one phrase per line).
pub const DEFAULT_LIST: &str = include_str!("default_filters.txt");
/// Longest pattern accepted, bytes.
pub const MAX_PATTERN_LEN: usize = 200;
/// Most user rules.
pub const MAX_RULES: usize = 500;
/// Compiled size limit for the user's regular expressions together, bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A user rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    /// The phrase or regular expression.
    pub pattern: String,
    /// True for a regular expression, false for a case-insensitive phrase.
    pub regex: bool,
}

/// Filter settings as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSettings {
    /// Keyword/regex filtering is on (the default list plus the user's rules).
    pub enabled: bool,
    /// Messages with links are hidden behind a warning.
    pub link_warnings: bool,
    /// True when `enabled` / `link_warnings` were never set and follow the age class (on for
    /// minors, off for adults).
    pub defaults: bool,
    /// The user's own rules.
    pub rules: Vec<FilterRule>,
}

/// Why a message is hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterReason {
    /// It matched a phrase or expression of the filter lists.
    Keyword,
    /// It contains a link.
    Link,
}

impl FilterReason {
    /// `keyword` or `link`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Link => "link",
        }
    }

    /// The warning shown in place of the message.
    pub fn warning(&self) -> &'static str {
        match self {
            Self::Keyword => "hidden by your filters: it matched a filtered phrase",
            Self::Link => "hidden by your filters: it contains a link",
        }
    }
}

// URLs with a scheme, `www.` hosts, and bare domains with a common top-level domain.
static LINK: LazyLock<Option<Regex>> = LazyLock::new(|| {
    RegexBuilder::new(
        r"(?i)\b(?:[a-z][a-z0-9+.-]*://\S+|www\.[^\s/]+\S*|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|co|me|app|gg|ly|xyz|info|biz|ru|tk|link|click|site|online|live|tv)\b\S*)",
    )
    .build()
    .ok()
});

/// True when `text` contains something a user could follow as a link.
pub fn has_link(text: &str) -> bool {
    LINK.as_ref().is_some_and(|re| re.is_match(text))
}

/// `text` with every link made inert: the scheme's `://` becomes `[:]//` and dots in the link
/// become `[.]`, so no client or terminal turns it into something clickable.
pub fn inert_links(text: &str) -> String {
    let Some(re) = LINK.as_ref() else { return text.to_string() };
    re.replace_all(text, |c: &regex::Captures<'_>| {
        c.get(0)
            .map_or_else(String::new, |m| m.as_str().replace("://", "[:]//").replace('.', "[.]"))
    })
    .into_owned()
}

/// Checks a user rule before it is stored.
pub fn validate_rule(rule: &FilterRule) -> Result<(), ClientError> {
    let p = rule.pattern.trim();
    if p.is_empty() || p.len() > MAX_PATTERN_LEN {
        return Err(ClientError::InvalidFilter(format!(
            "a filter is 1 to {MAX_PATTERN_LEN} bytes"
        )));
    }
    if rule.regex {
        RegexBuilder::new(p).case_insensitive(true).size_limit(REGEX_SIZE_LIMIT).build().map_err(
            |e| {
                // The parser's message spans lines (it draws a caret); keep its last line.
                let full = e.to_string();
                let why =
                    full.lines().last().unwrap_or_default().trim().trim_start_matches("error: ");
                ClientError::InvalidFilter(format!("invalid regular expression: {why}"))
            },
        )?;
    }
    Ok(())
}

/// The compiled filters.
#[derive(Debug, Default)]
pub struct Filter {
    phrases: Vec<String>,
    regexes: Option<RegexSet>,
    links: bool,
}

fn default_phrases() -> impl Iterator<Item = &'static str> {
    DEFAULT_LIST.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl Filter {
    /// Compiles the settings (an unusable stored regex is skipped, never fatal).
    pub fn new(s: &FilterSettings) -> Self {
        if !s.enabled {
            return Self { links: s.link_warnings, ..Self::default() };
        }
        let mut phrases: Vec<String> = default_phrases().map(str::to_lowercase).collect();
        phrases
            .extend(s.rules.iter().filter(|r| !r.regex).map(|r| r.pattern.trim().to_lowercase()));
        let exprs: Vec<&str> =
            s.rules.iter().filter(|r| r.regex).map(|r| r.pattern.trim()).collect();
        let regexes = if exprs.is_empty() {
            None
        } else {
            RegexSetBuilder::new(&exprs)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .ok()
        };
        Self { phrases, regexes, links: s.link_warnings }
    }

    /// Why `text` should be hidden, if it should.
    pub fn check(&self, text: &str) -> Option<FilterReason> {
        if !self.phrases.is_empty() || self.regexes.is_some() {
            // Curly apostrophes count as straight ones, so "don’t" matches "don't".
            let folded = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
            if self.phrases.iter().any(|p| folded.contains(p.as_str()))
                || self.regexes.as_ref().is_some_and(|r| r.is_match(text))
            {
                return Some(FilterReason::Keyword);
            }
        }
        if self.links && has_link(text) {
            return Some(FilterReason::Link);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn settings(enabled: bool, links: bool, rules: Vec<FilterRule>) -> FilterSettings {
        FilterSettings { enabled, link_warnings: links, defaults: false, rules }
    }

    #[test]
    fn default_list_user_rules_and_links() {
        let f = Filter::new(&settings(
            true,
            true,
            vec![
                FilterRule { pattern: "Pineapple".into(), regex: false },
                FilterRule { pattern: r"\b\d{3}-\d{4}\b".into(), regex: true },
            ],
        ));
        assert_eq!(f.check("Don’t tell your parents about this"), Some(FilterReason::Keyword));
        assert_eq!(f.check("I like PINEAPPLE pizza"), Some(FilterReason::Keyword));
        assert_eq!(f.check("call 555-1234"), Some(FilterReason::Keyword));
        assert_eq!(f.check("see https://example.org/x"), Some(FilterReason::Link));
        assert_eq!(f.check("go to evil.xyz now"), Some(FilterReason::Link));
        assert_eq!(f.check("see you at 5. ok?"), None);
        assert_eq!(f.check("hello there"), None);
        let off = Filter::new(&settings(false, false, vec![]));
        assert_eq!(off.check("send nudes https://x.com"), None);
        let links_only = Filter::new(&settings(false, true, vec![]));
        assert_eq!(links_only.check("send nudes"), None);
        assert_eq!(links_only.check("www.example.com"), Some(FilterReason::Link));
    }

    #[test]
    fn links_made_inert() {
        assert_eq!(
            inert_links("click https://evil.example.com/a.b now, or www.x.org"),
            "click https[:]//evil[.]example[.]com/a[.]b now, or www[.]x[.]org"
        );
        assert_eq!(inert_links("no links. here"), "no links. here");
        assert!(!has_link(&inert_links("https://a.com and b.io")));
    }

    #[test]
    fn rules_are_bounded() {
        assert!(validate_rule(&FilterRule { pattern: " ".into(), regex: false }).is_err());
        assert!(validate_rule(&FilterRule { pattern: "x".repeat(201), regex: false }).is_err());
        assert!(validate_rule(&FilterRule { pattern: "(unclosed".into(), regex: true }).is_err());
        // A pattern whose compiled form is huge is refused, not compiled.
        assert!(
            validate_rule(&FilterRule { pattern: r"\w{1000}\w{1000}".into(), regex: true })
                .is_err()
        );
        assert!(validate_rule(&FilterRule { pattern: r"a+b".into(), regex: true }).is_ok());
    }
}
