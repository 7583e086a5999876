//! Server list formats: PyBal's legacy one-dict-per-line and JSON (pure parsing).
//!
//! This module owns turning the text of a server list into [`ServerEntry`]
//! values: the legacy format (one Python dict literal per line, parsed with
//! [`pyliteral`](crate::config::pyliteral), never evaluated) and the JSON
//! format. Only `host`, `weight` (int >= 0, default 10) and `enabled` (bool,
//! default true) are taken; wrong types fall back to the defaults, other keys
//! are ignored, and a bad legacy line is skipped and reported with its line
//! number while the rest of the list still applies. Fetching lists (files,
//! HTTP) is `source`'s job.

use crate::config::pyliteral::{self, PyValue};
use std::collections::HashMap;
use std::fmt;

/// One server as the list gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerEntry {
    pub(crate) host: String,
    /// Missing = 10.
    pub(crate) weight: u32,
    /// Missing = true.
    pub(crate) enabled: bool,
}

impl ServerEntry {
    pub(crate) fn new(host: &str, weight: u32, enabled: bool) -> Self {
        ServerEntry {
            host: host.to_string(),
            weight,
            enabled,
        }
    }
}

/// A problem with one line of a legacy list (1-based line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) reason: String,
}

/// A parsed list: the servers, in file order with later duplicates replacing
/// earlier ones, plus the lines that were skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ParsedList {
    pub(crate) servers: Vec<ServerEntry>,
    pub(crate) errors: Vec<LineError>,
}

/// Why a whole document is unusable (a legacy list never is: its bad lines
/// are skipped).
#[derive(Debug)]
pub(crate) enum DocumentError {
    /// A JSON syntax error (serde's text names the line and column).
    NotJson(serde_json::Error),
    /// Valid JSON, but not an object of hosts; what it is instead.
    NotAnObject(&'static str),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::NotJson(e) => write!(f, "not valid JSON: {e}"),
            DocumentError::NotAnObject(found) => write!(
                f,
                "expected a JSON object {{\"host\": {{\"enabled\": true, \"weight\": 10}}, …}}, found {found}"
            ),
        }
    }
}

impl std::error::Error for DocumentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocumentError::NotJson(e) => Some(e),
            DocumentError::NotAnObject(_) => None,
        }
    }
}

/// Parses a list; `json` selects the JSON format. An `Err` means the whole
/// document is unusable (JSON syntax error, not an object).
pub(crate) fn parse(text: &str, json: bool) -> Result<ParsedList, DocumentError> {
    if json {
        parse_json(text)
    } else {
        Ok(parse_legacy(text))
    }
}

/// Weight of a server whose entry gives none (or a wrong one).
const DEFAULT_WEIGHT: u32 = 10;
/// `enabled` of a server whose entry gives none (or a wrong one).
const DEFAULT_ENABLED: bool = true;

/// Builds a [`ParsedList`], replacing earlier entries for the same host.
#[derive(Default)]
struct ListBuilder {
    list: ParsedList,
    index: HashMap<String, usize>,
}

impl ListBuilder {
    fn server(&mut self, entry: ServerEntry) {
        match self.index.get(&entry.host) {
            Some(&at) => {
                if let Some(slot) = self.list.servers.get_mut(at) {
                    *slot = entry;
                }
            }
            None => {
                self.index
                    .insert(entry.host.clone(), self.list.servers.len());
                self.list.servers.push(entry);
            }
        }
    }

    fn error(&mut self, line: usize, reason: String) {
        self.list.errors.push(LineError { line, reason });
    }
}

// ---------------------------------------------------------------------------
// Legacy: one Python dict per line
// ---------------------------------------------------------------------------

fn parse_legacy(text: &str) -> ParsedList {
    let mut builder = ListBuilder::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match legacy_entry(line) {
            Ok(entry) => builder.server(entry),
            Err(reason) => builder.error(index + 1, reason),
        }
    }
    builder.list
}

/// One line: `{'host': 'cp1001', 'weight': 10, 'enabled': True}`.
fn legacy_entry(line: &str) -> Result<ServerEntry, String> {
    let value = pyliteral::parse(line).map_err(|e| e.to_string())?;
    if !matches!(value, PyValue::Dict(_)) {
        return Err(format!(
            "expected a dict like {{'host': 'name', 'weight': 10, 'enabled': True}}, found a {}",
            value.type_name()
        ));
    }
    let host = match value.get("host") {
        Some(PyValue::Str(host)) => valid_host(host)?,
        Some(other) => {
            return Err(format!(
                "'host' must be a string, not a {}",
                other.type_name()
            ))
        }
        None => return Err("no 'host'".to_string()),
    };
    let weight = match value.get("weight") {
        Some(PyValue::Int(weight)) => u32::try_from(*weight).ok(),
        _ => None,
    };
    let enabled = match value.get("enabled") {
        Some(PyValue::Bool(enabled)) => Some(*enabled),
        _ => None,
    };
    Ok(entry(host, weight, enabled))
}

fn valid_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("empty 'host'".to_string());
    }
    Ok(host.to_string())
}

/// An entry with defaults for what is missing or of the wrong type.
fn entry(host: String, weight: Option<u32>, enabled: Option<bool>) -> ServerEntry {
    ServerEntry {
        host,
        weight: weight.unwrap_or(DEFAULT_WEIGHT),
        enabled: enabled.unwrap_or(DEFAULT_ENABLED),
    }
}

// ---------------------------------------------------------------------------
// JSON: {"host": {"enabled": true, "weight": 10}, …}
// ---------------------------------------------------------------------------

fn parse_json(text: &str) -> Result<ParsedList, DocumentError> {
    let document: serde_json::Value = serde_json::from_str(text).map_err(DocumentError::NotJson)?;
    let serde_json::Value::Object(hosts) = document else {
        return Err(DocumentError::NotAnObject(json_type(&document)));
    };
    let mut builder = ListBuilder::default();
    for (host, attributes) in &hosts {
        match json_entry(host, attributes) {
            Ok(entry) => builder.server(entry),
            Err(reason) => builder.error(json_key_line(text, host), reason),
        }
    }
    Ok(builder.list)
}

fn json_entry(host: &str, attributes: &serde_json::Value) -> Result<ServerEntry, String> {
    let host = valid_host(host)?;
    let serde_json::Value::Object(attributes) = attributes else {
        return Err(format!(
            "{host:?}: expected an object like {{\"enabled\": true, \"weight\": 10}}, found {}",
            json_type(attributes)
        ));
    };
    let weight = attributes
        .get("weight")
        .and_then(serde_json::Value::as_u64)
        .and_then(|w| u32::try_from(w).ok());
    let enabled = attributes
        .get("enabled")
        .and_then(serde_json::Value::as_bool);
    Ok(entry(host, weight, enabled))
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Best-effort 1-based line of `"key":` in the JSON text (1 if not found).
fn json_key_line(text: &str, key: &str) -> usize {
    let quoted = serde_json::to_string(key).unwrap_or_default();
    text.find(&quoted)
        .map_or(1, |at| text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, weight: u32, enabled: bool) -> ServerEntry {
        ServerEntry::new(host, weight, enabled)
    }

    #[test]
    fn legacy_list() {
        let text = "# text cluster\n\
            { 'host': 'cp1001.eqiad.wmnet', 'weight': 10, 'enabled': True }\n\
            \n\
            {'host': 'cp1002.eqiad.wmnet', 'weight': 25, 'enabled': False}\n\
            {\"host\": \"cp1003.eqiad.wmnet\"}  # defaults\n\
            {'host': '10.0.0.4', 'weight': 0, 'enabled': True, 'datacenter': 'eqiad'}\n";
        let list = parse(text, false).unwrap();
        assert!(list.errors.is_empty(), "{:?}", list.errors);
        assert_eq!(
            list.servers,
            vec![
                server("cp1001.eqiad.wmnet", 10, true),
                server("cp1002.eqiad.wmnet", 25, false),
                server("cp1003.eqiad.wmnet", 10, true),
                server("10.0.0.4", 0, true),
            ]
        );
    }

    #[test]
    fn legacy_wrong_types_fall_back_to_defaults() {
        let text = "{'host': 'a', 'weight': '20', 'enabled': 'yes'}\n\
                    {'host': 'b', 'weight': -1, 'enabled': 1}\n\
                    {'host': 'c', 'weight': 1.5, 'enabled': None}\n\
                    {'host': 'd', 'weight': 99999999999, 'enabled': False}\n";
        let list = parse(text, false).unwrap();
        assert!(list.errors.is_empty());
        assert_eq!(
            list.servers,
            vec![
                server("a", 10, true),
                server("b", 10, true),
                server("c", 10, true),
                server("d", 10, false),
            ]
        );
    }

    #[test]
    fn legacy_bad_lines_are_skipped_with_their_line_number() {
        let text = "{'host': 'a'}\n\
                    {'host': 'b',\n\
                    ['not', 'a', 'dict']\n\
                    {'weight': 10}\n\
                    {'host': 42}\n\
                    {'host': '  '}\n\
                    __import__('os').system('true')\n\
                    {'host': 'c'}\n";
        let list = parse(text, false).unwrap();
        assert_eq!(
            list.servers,
            vec![server("a", 10, true), server("c", 10, true)]
        );
        let lines: Vec<usize> = list.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(list.errors[2].reason.contains("no 'host'"));
        assert!(list.errors[5].reason.contains("not a literal"));
    }

    #[test]
    fn legacy_duplicates_keep_one_entry_with_later_values() {
        let text = "{'host': 'a', 'weight': 1}\n{'host': 'b'}\n{'host': 'a', 'enabled': False}\n";
        let list = parse(text, false).unwrap();
        assert_eq!(
            list.servers,
            vec![server("a", 10, false), server("b", 10, true)]
        );
    }

    #[test]
    fn empty_lists() {
        assert_eq!(parse("", false).unwrap(), ParsedList::default());
        assert_eq!(
            parse("# nothing\n\n", false).unwrap(),
            ParsedList::default()
        );
        assert_eq!(parse("{}", true).unwrap(), ParsedList::default());
    }

    #[test]
    fn json_list() {
        let text = r#"{
  "cp1001.eqiad.wmnet": {"enabled": true, "weight": 10},
  "cp1002.eqiad.wmnet": {"enabled": false, "weight": 5, "extra": [1]},
  "cp1003.eqiad.wmnet": {}
}"#;
        let mut list = parse(text, true).unwrap();
        list.servers.sort_by(|a, b| a.host.cmp(&b.host));
        assert!(list.errors.is_empty());
        assert_eq!(
            list.servers,
            vec![
                server("cp1001.eqiad.wmnet", 10, true),
                server("cp1002.eqiad.wmnet", 5, false),
                server("cp1003.eqiad.wmnet", 10, true),
            ]
        );
    }

    #[test]
    fn json_wrong_types_and_bad_entries() {
        let text = "{\n\"a\": {\"enabled\": \"yes\", \"weight\": \"7\"},\n\
                    \"b\": {\"enabled\": 0, \"weight\": -3},\n\
                    \"c\": {\"weight\": 2.5},\n\
                    \"d\": true,\n\
                    \"\": {}\n}";
        let mut list = parse(text, true).unwrap();
        list.servers.sort_by(|a, b| a.host.cmp(&b.host));
        assert_eq!(
            list.servers,
            vec![
                server("a", 10, true),
                server("b", 10, true),
                server("c", 10, true)
            ]
        );
        let mut lines: Vec<usize> = list.errors.iter().map(|e| e.line).collect();
        lines.sort();
        assert_eq!(lines, vec![5, 6]);
    }

    #[test]
    fn json_duplicates_later_wins() {
        let list = parse(r#"{"a": {"weight": 1}, "a": {"weight": 2}}"#, true).unwrap();
        assert_eq!(list.servers, vec![server("a", 2, true)]);
    }

    #[test]
    fn json_document_errors() {
        assert_eq!(
            parse("[1, 2]", true).unwrap_err().to_string(),
            "expected a JSON object {\"host\": {\"enabled\": true, \"weight\": 10}, …}, \
             found an array"
        );
        assert!(parse("{\"a\": ", true)
            .unwrap_err()
            .to_string()
            .starts_with("not valid JSON: EOF while parsing"));
        assert!(parse("", true).is_err());
        assert!(parse("\"x\"", true).is_err());
    }
}
