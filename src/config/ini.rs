//! INI reader in the Python 2.7 `RawConfigParser` flavour, keeping line numbers.
//!
//! This module owns the file syntax of `pybal.conf`: `[section]` headers
//! (case-sensitive), `key = value` / `key: value` lines (split at the first
//! `=` or `:`; keys trimmed and lower-cased, values trimmed), full-line `#` /
//! `;` comments, indented continuation lines (joined with `"\n"`) and the
//! `[DEFAULT]` section whose keys every other section inherits. Values are
//! kept verbatim: there is no inline-comment stripping (URLs contain `#` and
//! `;`) and no `%(name)s` interpolation. Meaning is given by `validate`.

/// Name of the section whose keys every section inherits.
pub(crate) const DEFAULT_SECTION: &str = "DEFAULT";

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ini {
    /// Keys of `[DEFAULT]`, inherited by every section.
    pub(crate) defaults: Vec<Entry>,
    /// Every other section in file order (a repeated header is merged into
    /// the first one, as Python does).
    pub(crate) sections: Vec<Section>,
}

/// One `[name]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: String,
    /// 1-based line of the (first) header.
    pub(crate) line: usize,
    /// Lines of later headers with the same name, merged into this section.
    pub(crate) repeated_at: Vec<usize>,
    /// The section's own keys, in first-appearance order (a repeated key
    /// keeps its first position but the later value and line).
    pub(crate) entries: Vec<Entry>,
    /// Keys given again: (key, line of the earlier one, line of the later).
    pub(crate) repeated_keys: Vec<(String, usize, usize)>,
}

/// One `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Trimmed and lower-cased.
    pub(crate) key: String,
    /// Trimmed; continuation lines joined with `"\n"`.
    pub(crate) value: String,
    /// 1-based line of the key.
    pub(crate) line: usize,
}

impl Section {
    fn new(name: &str, line: usize) -> Self {
        Section {
            name: name.to_string(),
            line,
            repeated_at: Vec::new(),
            entries: Vec::new(),
            repeated_keys: Vec::new(),
        }
    }

    /// The section's own entry for `key` (lower-case), without defaults.
    pub(crate) fn own(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

impl Ini {
    /// The section called `name` (case-sensitive), if any.
    pub(crate) fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// `key` in `section`, falling back to `[DEFAULT]` as Python does.
    pub(crate) fn get<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a Entry> {
        section
            .own(key)
            .or_else(|| self.defaults.iter().find(|e| e.key == key))
    }

    #[cfg(test)]
    /// Every entry visible in `section`: its own, then inherited defaults it
    /// does not override.
    pub(crate) fn entries<'a>(
        &'a self,
        section: &'a Section,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let inherited = self
            .defaults
            .iter()
            .filter(move |d| section.own(&d.key).is_none());
        section.entries.iter().chain(inherited)
    }
}

/// A line the reader could not make sense of: 1-based line and reason.
pub(crate) type LineProblem = (usize, String);

/// Parses the text. Bad lines are reported and skipped; everything else is
/// still read, so validation can report further problems too.
pub(crate) fn parse(text: &str) -> (Ini, Vec<LineProblem>) {
    let mut reader = Reader::default();
    for (index, raw) in text.lines().enumerate() {
        reader.line(index + 1, raw);
    }
    (reader.ini, reader.problems)
}

/// Where new keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    Defaults,
    Section(usize),
}

#[derive(Debug)]
struct Reader {
    ini: Ini,
    problems: Vec<LineProblem>,
    target: Target,
    /// The entry a continuation line extends: (target, index in its entries).
    last_entry: Option<usize>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            ini: Ini::default(),
            problems: Vec::new(),
            target: Target::None,
            last_entry: None,
        }
    }
}

impl Reader {
    fn line(&mut self, number: usize, raw: &str) {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let raw = if number == 1 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        if raw.trim().is_empty() || raw.starts_with(['#', ';']) {
            return;
        }
        if raw.starts_with(char::is_whitespace) {
            self.continuation(number, raw.trim());
        } else if let Some(name) = section_header(raw) {
            self.header(number, name);
        } else {
            self.key_value(number, raw);
        }
    }

    fn continuation(&mut self, number: usize, text: &str) {
        let Some(index) = self.last_entry else {
            self.problem(
                number,
                "indented line does not continue a value (remove the leading whitespace)",
            );
            return;
        };
        if let Some(entry) = self.entries_mut().and_then(|e| e.get_mut(index)) {
            entry.value.push('\n');
            entry.value.push_str(text);
        }
    }

    fn header(&mut self, number: usize, name: &str) {
        self.last_entry = None;
        if name == DEFAULT_SECTION {
            self.target = Target::Defaults;
            return;
        }
        match self.ini.sections.iter().position(|s| s.name == name) {
            Some(index) => {
                if let Some(section) = self.ini.sections.get_mut(index) {
                    section.repeated_at.push(number);
                }
                self.target = Target::Section(index);
            }
            None => {
                self.ini.sections.push(Section::new(name, number));
                self.target = Target::Section(self.ini.sections.len() - 1);
            }
        }
    }

    fn key_value(&mut self, number: usize, raw: &str) {
        let Some((key, value)) = split_key_value(raw) else {
            self.last_entry = None;
            self.problem(
                number,
                &format!(
                    "cannot parse {:?}: expected [section], key = value, or a # comment",
                    raw.trim()
                ),
            );
            return;
        };
        if self.target == Target::None {
            self.problem(number, &format!("key {key:?} before any [section] header"));
            return;
        }
        let entry = Entry {
            key,
            value,
            line: number,
        };
        if let Target::Section(section) = self.target {
            if let Some(section) = self.ini.sections.get_mut(section) {
                if let Some(earlier) = section.own(&entry.key) {
                    let repeat = (entry.key.clone(), earlier.line, number);
                    section.repeated_keys.push(repeat);
                }
            }
        }
        if let Some(entries) = self.entries_mut() {
            let index = match entries.iter().position(|e| e.key == entry.key) {
                Some(index) => {
                    entries[index] = entry;
                    index
                }
                None => {
                    entries.push(entry);
                    entries.len() - 1
                }
            };
            self.last_entry = Some(index);
        }
    }

    fn entries_mut(&mut self) -> Option<&mut Vec<Entry>> {
        match self.target {
            Target::None => None,
            Target::Defaults => Some(&mut self.ini.defaults),
            Target::Section(index) => self.ini.sections.get_mut(index).map(|s| &mut s.entries),
        }
    }

    fn problem(&mut self, number: usize, reason: &str) {
        self.problems.push((number, reason.to_string()));
    }
}

/// `[name]` → `name` (Python: `\[([^]]+)\]` at the start; the rest of the
/// line is ignored).
fn section_header(raw: &str) -> Option<&str> {
    let rest = raw.strip_prefix('[')?;
    let end = rest.find(']')?;
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

/// Splits at the first `=` or `:`; the key must be non-empty.
fn split_key_value(raw: &str) -> Option<(String, String)> {
    let at = raw.find(['=', ':'])?;
    let key = raw[..at].trim();
    if key.is_empty() {
        return None;
    }
    let value = raw[at + 1..].trim();
    Some((key.to_lowercase(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Ini {
        let (ini, problems) = parse(text);
        assert!(problems.is_empty(), "unexpected problems: {problems:?}");
        ini
    }

    fn value<'a>(ini: &'a Ini, section: &str, key: &str) -> Option<&'a str> {
        let section = ini.section(section)?;
        ini.get(section, key).map(|e| e.value.as_str())
    }

    #[test]
    fn sections_keys_and_line_numbers() {
        let ini =
            parse_ok("# comment\n[global]\nbgp = yes\n\n[Text_HTTPS]\nPort: 443\nip=10.2.2.1\n");
        assert_eq!(ini.sections.len(), 2);
        let global = &ini.sections[0];
        assert_eq!((global.name.as_str(), global.line), ("global", 2));
        assert_eq!(
            global.entries[0],
            Entry {
                key: "bgp".into(),
                value: "yes".into(),
                line: 3
            }
        );
        let svc = &ini.sections[1];
        assert_eq!((svc.name.as_str(), svc.line), ("Text_HTTPS", 5));
        assert_eq!(
            svc.entries[0],
            Entry {
                key: "port".into(),
                value: "443".into(),
                line: 6
            }
        );
        assert_eq!(svc.entries[1].line, 7);
        assert!(
            ini.section("text_https").is_none(),
            "section names are case-sensitive"
        );
    }

    #[test]
    fn first_of_colon_or_equals_splits() {
        let ini =
            parse_ok("[s]\nconfig = http://config-master/pybal/x\nurl: http://a:80/b=c\nk=v:w\n");
        assert_eq!(
            value(&ini, "s", "config"),
            Some("http://config-master/pybal/x")
        );
        assert_eq!(value(&ini, "s", "url"), Some("http://a:80/b=c"));
        assert_eq!(value(&ini, "s", "k"), Some("v:w"));
    }

    #[test]
    fn keys_lower_cased_and_trimmed_values_trimmed() {
        let ini = parse_ok("[s]\n  \nProxyFetch.URL   =   'x'   \nEMPTY =\n");
        assert_eq!(value(&ini, "s", "proxyfetch.url"), Some("'x'"));
        assert_eq!(value(&ini, "s", "empty"), Some(""));
    }

    #[test]
    fn comments_and_no_inline_stripping() {
        let ini = parse_ok(
            "; semi\n# hash\n[s]\nurl = http://h/a#frag ; not a comment\n#k = v\n;k2 = v\n",
        );
        assert_eq!(
            value(&ini, "s", "url"),
            Some("http://h/a#frag ; not a comment")
        );
        assert_eq!(ini.sections[0].entries.len(), 1);
    }

    #[test]
    fn continuation_lines() {
        let text = "[s]\nmonitors = [\n    'ProxyFetch',\n\n\t'IdleConnection' ]\nport = 80\n";
        let ini = parse_ok(text);
        assert_eq!(
            value(&ini, "s", "monitors"),
            Some("[\n'ProxyFetch',\n'IdleConnection' ]")
        );
        assert_eq!(ini.sections[0].entries[0].line, 2);
        assert_eq!(value(&ini, "s", "port"), Some("80"));
    }

    #[test]
    fn default_section_is_inherited() {
        let text = "[DEFAULT]\nscheduler = wrr\nbgp = no\n[a]\nbgp = yes\n[b]\nport = 80\n";
        let ini = parse_ok(text);
        assert_eq!(ini.sections.len(), 2);
        assert_eq!(value(&ini, "a", "scheduler"), Some("wrr"));
        assert_eq!(value(&ini, "a", "bgp"), Some("yes"));
        assert_eq!(value(&ini, "b", "bgp"), Some("no"));
        let b = ini.section("b").unwrap();
        let keys: Vec<_> = ini.entries(b).map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, vec![("port", 7), ("scheduler", 2), ("bgp", 3)]);
        let a = ini.section("a").unwrap();
        assert_eq!(ini.entries(a).count(), 2);
    }

    #[test]
    fn duplicate_key_later_wins_with_its_line() {
        let ini = parse_ok("[s]\nport = 80\nip = 1.2.3.4\nport = 443\n");
        let port = ini.sections[0].own("port").unwrap();
        assert_eq!((port.value.as_str(), port.line), ("443", 4));
        assert_eq!(ini.sections[0].entries.len(), 2);
    }

    #[test]
    fn repeated_section_is_merged() {
        let ini = parse_ok("[s]\na = 1\n[t]\n[s]\nb = 2\n");
        assert_eq!(ini.sections.len(), 2);
        let s = ini.section("s").unwrap();
        assert_eq!(s.repeated_at, vec![4]);
        assert_eq!(s.entries.len(), 2);
    }

    #[test]
    fn errors_have_line_numbers_and_parsing_continues() {
        let text = "port = 80\n[s]\nthis is not valid\n= value\n  \n[t]\nk = v\n";
        let (ini, problems) = parse(text);
        let lines: Vec<usize> = problems.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 4]);
        assert!(problems[0].1.contains("before any [section]"));
        assert!(problems[1].1.contains("this is not valid"));
        assert_eq!(value(&ini, "t", "k"), Some("v"));
    }

    #[test]
    fn indented_line_without_a_value_is_an_error() {
        let (_, problems) = parse("[s]\n   port = 80\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 2);
        let (_, problems) = parse("  [s]\n");
        assert_eq!(problems[0].0, 1);
    }

    #[test]
    fn crlf_bom_and_odd_headers() {
        let ini = parse_ok("\u{feff}[s] trailing\r\nk = v\r\n");
        assert_eq!(value(&ini, "s", "k"), Some("v"));
        let (_, problems) = parse("[]\n[unclosed\n");
        assert_eq!(problems.len(), 2);
    }
}
