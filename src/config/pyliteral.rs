//! Parser for the Python literals PyBal used to `eval()`.
//!
//! PyBal ran `eval()` on config values such as `monitors` and on every line
//! of a legacy server list. This module owns the safe replacement: a parser
//! for Python (2.7-flavoured) literals — strings, numbers, `True`/`False`/
//! `None`, lists, tuples and dicts — that never evaluates anything, limits
//! nesting depth and never panics. It also owns the small helpers the rest of
//! the config code uses to read values (`as_str_list`, `parse_bool`).

use std::fmt;

/// Deepest nesting of lists/tuples/dicts accepted, so hostile input cannot
/// exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// A parsed Python literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Key/value pairs in source order (a repeated key keeps both; use
    /// [`PyValue::get`], which returns the later one as Python would).
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    /// The Python type name (`str`, `int`, `list`, …), for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            PyValue::Str(_) => "str",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Bool(_) => "bool",
            PyValue::None => "None",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
        }
    }

    /// The string, if this is a `str`.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A list or tuple of strings, or a single string (a one-element list,
    /// as PyBal accepted where it expected a list).
    pub(crate) fn as_str_list(&self) -> Result<Vec<String>, Error> {
        match self {
            PyValue::Str(s) => Ok(vec![s.clone()]),
            PyValue::List(items) | PyValue::Tuple(items) => items
                .iter()
                .map(|item| match item {
                    PyValue::Str(s) => Ok(s.clone()),
                    other => Err(Error::NotStrInList(other.type_name())),
                })
                .collect(),
            other => Err(Error::NotStrOrList(other.type_name())),
        }
    }

    /// Looks up a string key in a dict; a repeated key yields its last value,
    /// like Python's dict display.
    pub(crate) fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_hashable(&self) -> bool {
        match self {
            PyValue::List(_) | PyValue::Dict(_) => false,
            PyValue::Tuple(items) => items.iter().all(PyValue::is_hashable),
            _ => true,
        }
    }
}

impl fmt::Display for PyValue {
    /// Python `repr()`-like rendering.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::Str(s) => write!(f, "{s:?}"),
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::Float(x) => write!(f, "{x:?}"),
            PyValue::Bool(true) => f.write_str("True"),
            PyValue::Bool(false) => f.write_str("False"),
            PyValue::None => f.write_str("None"),
            PyValue::List(items) => write_seq(f, "[", items, "]"),
            PyValue::Tuple(items) if items.len() == 1 => write_seq(f, "(", items, ",)"),
            PyValue::Tuple(items) => write_seq(f, "(", items, ")"),
            PyValue::Dict(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_seq(
    f: &mut fmt::Formatter<'_>,
    open: &str,
    items: &[PyValue],
    close: &str,
) -> fmt::Result {
    f.write_str(open)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(close)
}

/// Why a text is not a Python literal, or a literal not the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// Not a Python literal: what is wrong, and where.
    Syntax(Syntax, Position),
    /// [`PyValue::as_str_list`]: a list holding a value of this type.
    NotStrInList(&'static str),
    /// [`PyValue::as_str_list`]: neither a string nor a list, but this type.
    NotStrOrList(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(syntax, at) => write!(f, "{syntax} at {at}"),
            Error::NotStrInList(found) => write!(
                f,
                "expected a list of strings, but it contains {} {found}",
                article(found)
            ),
            Error::NotStrOrList(found) => write!(
                f,
                "expected a string or a list of strings, found {} {found}",
                article(found)
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Where in the text a syntax error is: 1-based column, and the line when
/// the text has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: Option<usize>,
    pub(crate) column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}, column {}", self.column),
            None => write!(f, "column {}", self.column),
        }
    }
}

/// What makes a text not a Python literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// Only blanks and comments.
    Empty,
    /// The text ends where a value should start.
    EndOfInput,
    /// This character where a value should start.
    ExpectedValue(char),
    /// This character after a complete top-level value.
    AfterValue(char),
    /// Deeper than [`MAX_DEPTH`].
    TooDeep,
    /// This bracket is never closed.
    Unclosed(char),
    /// `found` where `,` or the `close` bracket should be.
    ExpectedComma { found: char, close: char },
    /// This character where a dict's `:` should be.
    ExpectedColon(char),
    /// A dict key of this (unhashable) type.
    Unhashable(&'static str),
    /// A name (not `True`, `False`, `None`): nothing is evaluated.
    NotALiteral(String),
    /// A string without its closing quote.
    Unterminated,
    /// A single-quoted string with a newline inside.
    UnterminatedAtEndOfLine,
    /// `\x`, `\u` or `\U` without this many hex digits.
    HexDigits(usize),
    /// An escape naming this code point, which is not a character.
    NotACharacter(u32),
    /// A sign without a number.
    ExpectedNumber,
    /// Digits (as written) that do not make a number.
    NotANumber(String),
    /// An integer (as written) beyond 64 bits.
    TooLarge(String),
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syntax::Empty => f.write_str("empty value: expected a Python literal"),
            Syntax::EndOfInput => f.write_str("unexpected end of input: expected a value"),
            Syntax::ExpectedValue(c) => write!(f, "unexpected {}: expected a value", describe(*c)),
            Syntax::AfterValue(c) => write!(f, "unexpected {} after the value", describe(*c)),
            Syntax::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Syntax::Unclosed(open) => write!(f, "unclosed {open:?}"),
            Syntax::ExpectedComma { found, close } => write!(
                f,
                "unexpected {}: expected ',' or {close:?}",
                describe(*found)
            ),
            Syntax::ExpectedColon(c) => write!(f, "unexpected {}: expected ':'", describe(*c)),
            Syntax::Unhashable(type_name) => {
                write!(f, "unhashable type '{type_name}' as dict key")
            }
            Syntax::NotALiteral(word) => write!(
                f,
                "{word:?} is not a literal (names and expressions are not evaluated; quote strings)"
            ),
            Syntax::Unterminated => f.write_str("unterminated string"),
            Syntax::UnterminatedAtEndOfLine => {
                f.write_str("unterminated string (end of line inside it)")
            }
            Syntax::HexDigits(digits) => write!(f, "bad escape: expected {digits} hex digits"),
            Syntax::NotACharacter(code) => write!(f, "bad escape: U+{code:X} is not a character"),
            Syntax::ExpectedNumber => f.write_str("expected a number"),
            Syntax::NotANumber(body) => write!(f, "{body:?} is not a number"),
            Syntax::TooLarge(body) => write!(f, "integer {body} is too large"),
        }
    }
}

fn article(type_name: &str) -> &'static str {
    match type_name {
        "int" => "an",
        "None" => "",
        _ => "a",
    }
}

/// Parses one Python literal (the whole text; surrounding whitespace and
/// `#` comments allowed). A top-level `a, b` is a tuple, as in `eval()`.
pub(crate) fn parse(text: &str) -> Result<PyValue, Error> {
    let mut parser = Parser::new(text);
    let value = parser.top_level()?;
    parser.skip_blank();
    match parser.peek() {
        None => Ok(value),
        Some(c) => Err(parser.error(Syntax::AfterValue(c))),
    }
}

/// A SPEC boolean: `t true y yes on 1` / `f false n no off 0`, any case
/// (so Python's `True`/`False` too). Surrounding whitespace is ignored.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn describe(c: char) -> String {
    if c == '\n' {
        "end of line".to_string()
    } else {
        format!("{c:?}")
    }
}

/// Recursive-descent parser over the characters of the input.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        Parser {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// A syntax error at the current position.
    fn error(&self, syntax: Syntax) -> Error {
        self.error_at(self.pos, syntax)
    }

    /// A syntax error at `pos` (1-based column, and line when the text has
    /// several).
    fn error_at(&self, pos: usize, syntax: Syntax) -> Error {
        let before = &self.chars[..pos.min(self.chars.len())];
        let line = before.iter().filter(|&&c| c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        let multi_line = self.chars.contains(&'\n');
        let line = multi_line.then_some(line);
        Error::Syntax(syntax, Position { line, column })
    }

    /// Skips whitespace, newlines, `#` comments and backslash-newline.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if c == '\\' && matches!(self.peek_at(1), Some('\n')) {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn top_level(&mut self) -> Result<PyValue, Error> {
        self.skip_blank();
        if self.peek().is_none() {
            return Err(self.error(Syntax::Empty));
        }
        let first = self.value()?;
        self.skip_blank();
        if self.peek() != Some(',') {
            return Ok(first);
        }
        // `a, b` at top level is a tuple, like eval() gives.
        let mut items = vec![first];
        while self.peek() == Some(',') {
            self.pos += 1;
            self.skip_blank();
            if self.peek().is_none() {
                break;
            }
            items.push(self.value()?);
            self.skip_blank();
        }
        Ok(PyValue::Tuple(items))
    }

    fn value(&mut self) -> Result<PyValue, Error> {
        self.skip_blank();
        let Some(c) = self.peek() else {
            return Err(self.error(Syntax::EndOfInput));
        };
        match c {
            '[' => self.nested(|p| p.list()),
            '(' => self.nested(|p| p.paren()),
            '{' => self.nested(|p| p.dict()),
            '\'' | '"' => self.strings(),
            '-' | '+' | '.' | '0'..='9' => self.number(),
            c if c.is_alphabetic() || c == '_' => self.word(),
            c => Err(self.error(Syntax::ExpectedValue(c))),
        }
    }

    fn nested(
        &mut self,
        inner: fn(&mut Parser) -> Result<PyValue, Error>,
    ) -> Result<PyValue, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(Syntax::TooDeep));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    /// Items up to `close`, separated by commas, trailing comma allowed.
    /// Returns the items and whether a comma was seen.
    fn items(&mut self, close: char) -> Result<(Vec<PyValue>, bool), Error> {
        let open_pos = self.pos;
        self.pos += 1; // the opening bracket
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_blank();
            match self.peek() {
                None => {
                    let open = self.chars.get(open_pos).copied().unwrap_or(' ');
                    return Err(self.error_at(open_pos, Syntax::Unclosed(open)));
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok((items, comma));
                }
                Some(_) => {}
            }
            items.push(self.value()?);
            self.skip_blank();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    comma = true;
                }
                Some(c) if c == close => {}
                None => {}
                Some(c) => return Err(self.error(Syntax::ExpectedComma { found: c, close })),
            }
        }
    }

    fn list(&mut self) -> Result<PyValue, Error> {
        let (items, _) = self.items(']')?;
        Ok(PyValue::List(items))
    }

    /// `()` empty tuple, `(x)` just x, `(x,)` and `(x, y)` tuples.
    fn paren(&mut self) -> Result<PyValue, Error> {
        let (mut items, comma) = self.items(')')?;
        if items.len() == 1 && !comma {
            Ok(items.remove(0))
        } else {
            Ok(PyValue::Tuple(items))
        }
    }

    fn dict(&mut self) -> Result<PyValue, Error> {
        let open_pos = self.pos;
        self.pos += 1;
        let mut pairs = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(self.error_at(open_pos, Syntax::Unclosed('{'))),
                Some('}') => {
                    self.pos += 1;
                    return Ok(PyValue::Dict(pairs));
                }
                Some(_) => {}
            }
            let key_pos = self.pos;
            let key = self.value()?;
            if !key.is_hashable() {
                return Err(self.error_at(key_pos, Syntax::Unhashable(key.type_name())));
            }
            self.skip_blank();
            match self.peek() {
                Some(':') => self.pos += 1,
                Some(c) => return Err(self.error(Syntax::ExpectedColon(c))),
                None => return Err(self.error_at(open_pos, Syntax::Unclosed('{'))),
            }
            let value = self.value()?;
            pairs.push((key, value));
            self.skip_blank();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') | None => {}
                Some(c) => {
                    return Err(self.error(Syntax::ExpectedComma {
                        found: c,
                        close: '}',
                    }))
                }
            }
        }
    }

    /// `True`, `False`, `None`, or a prefixed string such as `u'x'`.
    fn word(&mut self) -> Result<PyValue, Error> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        if matches!(self.peek(), Some('\'' | '"')) && is_string_prefix(&word) {
            self.pos = start;
            return self.strings();
        }
        match word.as_str() {
            "True" => Ok(PyValue::Bool(true)),
            "False" => Ok(PyValue::Bool(false)),
            "None" => Ok(PyValue::None),
            _ => Err(self.error_at(start, Syntax::NotALiteral(word))),
        }
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<PyValue, Error> {
        let mut text = self.string()?;
        loop {
            let save = self.pos;
            self.skip_blank();
            if self.at_string_start() {
                text.push_str(&self.string()?);
            } else {
                self.pos = save;
                return Ok(PyValue::Str(text));
            }
        }
    }

    fn at_string_start(&self) -> bool {
        let mut offset = 0;
        while let Some(c) = self.peek_at(offset) {
            if c == '\'' || c == '"' {
                return offset <= 2;
            }
            if !matches!(c.to_ascii_lowercase(), 'u' | 'r' | 'b') {
                return false;
            }
            offset += 1;
        }
        false
    }

    /// One string literal with optional `u`/`r`/`b` prefix, single or
    /// triple quoted.
    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let mut raw = false;
        while let Some(c) = self.peek() {
            match c.to_ascii_lowercase() {
                'r' => raw = true,
                'u' | 'b' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let Some(quote) = self.bump() else {
            return Err(self.error_at(start, Syntax::Unterminated));
        };
        let triple = self.peek() == Some(quote) && self.peek_at(1) == Some(quote);
        if triple {
            self.pos += 2;
        }
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(self.error_at(start, Syntax::Unterminated));
            };
            if c == quote {
                if !triple {
                    return Ok(out);
                }
                if self.peek() == Some(quote) && self.peek_at(1) == Some(quote) {
                    self.pos += 2;
                    return Ok(out);
                }
                out.push(c);
            } else if c == '\n' && !triple {
                return Err(self.error_at(start, Syntax::UnterminatedAtEndOfLine));
            } else if c == '\\' {
                self.escape(raw, &mut out)?;
            } else {
                out.push(c);
            }
        }
    }

    /// After a backslash: appends what the escape means.
    fn escape(&mut self, raw: bool, out: &mut String) -> Result<(), Error> {
        let escape_pos = self.pos - 1;
        let Some(c) = self.bump() else {
            return Err(self.error_at(escape_pos, Syntax::Unterminated));
        };
        if raw {
            // Raw strings keep the backslash; it only stops a quote ending them.
            out.push('\\');
            out.push(c);
            return Ok(());
        }
        match c {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            'x' => out.push(self.hex_escape(2, escape_pos)?),
            'u' => out.push(self.hex_escape(4, escape_pos)?),
            'U' => out.push(self.hex_escape(8, escape_pos)?),
            '0'..='7' => out.push(self.octal_escape(c)),
            other => {
                // Unknown escapes stay as written, like Python.
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }

    fn hex_escape(&mut self, digits: usize, escape_pos: usize) -> Result<char, Error> {
        let mut code: u32 = 0;
        for _ in 0..digits {
            let digit = self.peek().and_then(|c| c.to_digit(16));
            let Some(digit) = digit else {
                return Err(self.error_at(escape_pos, Syntax::HexDigits(digits)));
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        char::from_u32(code).ok_or_else(|| self.error_at(escape_pos, Syntax::NotACharacter(code)))
    }

    fn octal_escape(&mut self, first: char) -> char {
        let mut code = first.to_digit(8).unwrap_or(0);
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(d) => {
                    code = code * 8 + d;
                    self.pos += 1;
                }
                None => break,
            }
        }
        char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
    }

    /// An int (decimal, `0x`, `0o`, `0b`, Python 2 `0777` and `10L`) or a
    /// float, with optional unary sign.
    fn number(&mut self) -> Result<PyValue, Error> {
        let start = self.pos;
        let mut negative = false;
        while let Some(sign @ ('-' | '+')) = self.peek() {
            if sign == '-' {
                negative = !negative;
            }
            self.pos += 1;
            self.skip_blank();
        }
        let body_start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '.' || c == '_')
            || (matches!(self.peek(), Some('+' | '-'))
                && matches!(self.chars.get(self.pos.wrapping_sub(1)), Some('e' | 'E'))
                && !self.is_radix_literal(body_start))
        {
            self.pos += 1;
        }
        let body: String = self.chars[body_start..self.pos].iter().collect();
        if body.is_empty() {
            return Err(self.error_at(start, Syntax::ExpectedNumber));
        }
        parse_number(&body, negative).map_err(|why| self.error_at(start, why))
    }

    fn is_radix_literal(&self, body_start: usize) -> bool {
        self.chars.get(body_start) == Some(&'0')
            && matches!(self.chars.get(body_start + 1), Some('x' | 'X'))
    }
}

fn is_string_prefix(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "u" | "r" | "b" | "ur" | "br" | "rb"
    )
}

/// Parses the digits of a number (no sign) and applies the sign.
fn parse_number(body: &str, negative: bool) -> Result<PyValue, Syntax> {
    let lower = body.to_ascii_lowercase();
    let is_float = !lower.starts_with("0x") && (lower.contains('.') || lower.contains('e'));
    if is_float {
        return parse_float(body, negative);
    }
    let digits = lower.strip_suffix('l').unwrap_or(&lower);
    let (radix, digits) = if let Some(rest) = digits.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = digits.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = digits.strip_prefix("0b") {
        (2, rest)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(Syntax::NotANumber(body.to_string()));
    }
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.to_string()
    };
    i64::from_str_radix(&signed, radix)
        .map(PyValue::Int)
        .map_err(|_| Syntax::TooLarge(body.to_string()))
}

fn parse_float(body: &str, negative: bool) -> Result<PyValue, Syntax> {
    let valid = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && body.chars().any(|c| c.is_ascii_digit());
    let value: f64 = if valid { body.parse().ok() } else { None }
        .ok_or_else(|| Syntax::NotANumber(body.to_string()))?;
    Ok(PyValue::Float(if negative { -value } else { value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> PyValue {
        PyValue::Str(text.to_string())
    }

    /// The text of the error parsing `text` gives.
    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn ok(text: &str) -> PyValue {
        match parse(text) {
            Ok(v) => v,
            Err(e) => panic!("{text:?} failed: {e}"),
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("True"), PyValue::Bool(true));
        assert_eq!(ok(" False "), PyValue::Bool(false));
        assert_eq!(ok("None"), PyValue::None);
        assert_eq!(ok("10"), PyValue::Int(10));
        assert_eq!(ok("-10"), PyValue::Int(-10));
        assert_eq!(ok("- 3"), PyValue::Int(-3));
        assert_eq!(ok("+7"), PyValue::Int(7));
        assert_eq!(ok("0"), PyValue::Int(0));
        assert_eq!(ok("0x1F"), PyValue::Int(31));
        assert_eq!(ok("0o17"), PyValue::Int(15));
        assert_eq!(ok("017"), PyValue::Int(15));
        assert_eq!(ok("0b101"), PyValue::Int(5));
        assert_eq!(ok("10L"), PyValue::Int(10));
        assert_eq!(ok("1.5"), PyValue::Float(1.5));
        assert_eq!(ok("-0.25"), PyValue::Float(-0.25));
        assert_eq!(ok(".5"), PyValue::Float(0.5));
        assert_eq!(ok("5."), PyValue::Float(5.0));
        assert_eq!(ok("1e3"), PyValue::Float(1000.0));
        assert_eq!(ok("1.5e-3"), PyValue::Float(0.0015));
        assert_eq!(ok("-9223372036854775808"), PyValue::Int(i64::MIN));
    }

    #[test]
    fn bad_numbers() {
        assert!(err("99999999999999999999").contains("too large"));
        assert!(parse("12ab").is_err());
        assert!(parse("09").is_err());
        assert!(parse("1.2.3").is_err());
        assert!(parse("-").is_err());
        assert!(parse("1e").is_err());
        assert!(parse("0x").is_err());
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(ok("'abc'"), s("abc"));
        assert_eq!(ok("\"abc\""), s("abc"));
        assert_eq!(ok(r#"'it\'s'"#), s("it's"));
        assert_eq!(ok(r#""say \"hi\"""#), s("say \"hi\""));
        assert_eq!(ok(r"'a\\b'"), s("a\\b"));
        assert_eq!(ok(r"'\n\t\r'"), s("\n\t\r"));
        assert_eq!(ok(r"'\x41\x42'"), s("AB"));
        assert_eq!(ok(r"u'\u00e9t\u00e9'"), s("été"));
        assert_eq!(ok(r"'\U0001F600'"), s("😀"));
        assert_eq!(ok(r"'\101'"), s("A"));
        assert_eq!(ok(r"'\0'"), s("\0"));
        // Unknown escapes are kept literally.
        assert_eq!(ok(r"'\d\q'"), s("\\d\\q"));
        assert_eq!(ok(r"r'\d\n'"), s("\\d\\n"));
        assert_eq!(ok(r"r'a\'b'"), s("a\\'b"));
        assert_eq!(ok("b'bytes'"), s("bytes"));
        assert_eq!(ok("U'x'"), s("x"));
        assert_eq!(ok("'''tri'ple'''"), s("tri'ple"));
        assert_eq!(ok("\"\"\"a\nb\"\"\""), s("a\nb"));
        assert_eq!(ok("'a' \"b\" u'c'"), s("abc"));
        assert_eq!(ok("'ünïcødé ✓'"), s("ünïcødé ✓"));
        assert_eq!(ok("''"), s(""));
    }

    #[test]
    fn bad_strings() {
        assert!(err("'abc").contains("unterminated"));
        assert!(err("'a\nb'").contains("unterminated"));
        assert!(err(r"'\x4'").contains("hex"));
        assert!(err(r"'\uD800'").contains("not a character"));
        assert!(parse("'\\").is_err());
        assert!(parse("x'a'").is_err());
    }

    #[test]
    fn containers() {
        assert_eq!(ok("[]"), PyValue::List(vec![]));
        assert_eq!(ok("()"), PyValue::Tuple(vec![]));
        assert_eq!(ok("{}"), PyValue::Dict(vec![]));
        assert_eq!(ok("(1)"), PyValue::Int(1));
        assert_eq!(ok("(1,)"), PyValue::Tuple(vec![PyValue::Int(1)]));
        assert_eq!(
            ok("[ 'ProxyFetch', \"IdleConnection\", ]"),
            PyValue::List(vec![s("ProxyFetch"), s("IdleConnection")])
        );
        assert_eq!(
            ok("{'host': 'cp1001', 'weight': 10, 'enabled': True,}"),
            PyValue::Dict(vec![
                (s("host"), s("cp1001")),
                (s("weight"), PyValue::Int(10)),
                (s("enabled"), PyValue::Bool(true)),
            ])
        );
        assert_eq!(
            ok("[[1, (2, 3)], {'a': [None]}]"),
            PyValue::List(vec![
                PyValue::List(vec![
                    PyValue::Int(1),
                    PyValue::Tuple(vec![PyValue::Int(2), PyValue::Int(3)])
                ]),
                PyValue::Dict(vec![(s("a"), PyValue::List(vec![PyValue::None]))]),
            ])
        );
        assert_eq!(
            ok("1, 2"),
            PyValue::Tuple(vec![PyValue::Int(1), PyValue::Int(2)])
        );
        assert_eq!(ok("{(1, 2): 'x'}").get("x"), None);
    }

    #[test]
    fn whitespace_newlines_and_comments() {
        let text = "[ # the monitors\n  'ProxyFetch',  # first\n\n  'IdleConnection'\n] # done";
        assert_eq!(
            ok(text),
            PyValue::List(vec![s("ProxyFetch"), s("IdleConnection")])
        );
        assert_eq!(
            ok("{'a': 1} # comment"),
            PyValue::Dict(vec![(s("a"), PyValue::Int(1))])
        );
        assert_eq!(ok("'#not a comment'"), s("#not a comment"));
    }

    #[test]
    fn garbage_is_an_error_with_column() {
        let e = err("[1, 2");
        assert!(e.contains("unclosed") && e.contains("column 1"), "{e}");
        let e = err("[1 2]");
        assert!(e.contains("expected ','") && e.contains("column 4"), "{e}");
        let e = err("{'a' 1}");
        assert!(e.contains("expected ':'"), "{e}");
        let e = err("__import__('os').system('rm -rf /')");
        assert!(e.contains("not a literal"), "{e}");
        assert!(err("").contains("empty"));
        assert!(parse("   # only a comment").is_err());
        assert!(err("1 2").contains("after the value"));
        assert!(parse("[1,,2]").is_err());
        assert!(parse("{,}").is_err());
        assert!(err("{[1]: 2}").contains("unhashable"));
        assert!(parse("{1, 2}").is_err());
        assert!(parse("]").is_err());
        assert!(parse("@").is_err());
        let e = err("[\n 1,\n 2 3]");
        assert!(e.contains("line 3, column 4"), "{e}");
    }

    #[test]
    fn errors_are_typed_and_keep_their_texts() {
        let at = |line, column| Position { line, column };
        let cases = [
            (
                "[1, 2",
                Error::Syntax(Syntax::Unclosed('['), at(None, 1)),
                "unclosed '[' at column 1",
            ),
            (
                "{'a': 1",
                Error::Syntax(Syntax::Unclosed('{'), at(None, 1)),
                "unclosed '{' at column 1",
            ),
            (
                "{'a' 1}",
                Error::Syntax(Syntax::ExpectedColon('1'), at(None, 6)),
                "unexpected '1': expected ':' at column 6",
            ),
            (
                "{'a': 1 2}",
                Error::Syntax(
                    Syntax::ExpectedComma {
                        found: '2',
                        close: '}',
                    },
                    at(None, 9),
                ),
                "unexpected '2': expected ',' or '}' at column 9",
            ),
            (
                "[\n 1,\n 2 3]",
                Error::Syntax(
                    Syntax::ExpectedComma {
                        found: '3',
                        close: ']',
                    },
                    at(Some(3), 4),
                ),
                "unexpected '3': expected ',' or ']' at line 3, column 4",
            ),
            (
                "'a\nb'",
                Error::Syntax(Syntax::UnterminatedAtEndOfLine, at(Some(1), 1)),
                "unterminated string (end of line inside it) at line 1, column 1",
            ),
            (
                "99999999999999999999",
                Error::Syntax(Syntax::TooLarge("99999999999999999999".into()), at(None, 1)),
                "integer 99999999999999999999 is too large at column 1",
            ),
            (
                "1 x",
                Error::Syntax(Syntax::AfterValue('x'), at(None, 3)),
                "unexpected 'x' after the value at column 3",
            ),
        ];
        for (text, error, message) in cases {
            assert_eq!(parse(text), Err(error.clone()), "{text:?}");
            assert_eq!(error.to_string(), message);
        }
        assert_eq!(
            ok("[None]").as_str_list().unwrap_err().to_string(),
            "expected a list of strings, but it contains  None"
        );
        assert_eq!(ok("1").as_str_list(), Err(Error::NotStrOrList("int")));
        assert_eq!(
            Error::NotStrOrList("int").to_string(),
            "expected a string or a list of strings, found an int"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("nested deeper"));
        let ok_depth = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok_depth).is_ok());
        let too_deep = format!("{}{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(parse(&too_deep).is_err());
        let dicts = "{'a':".repeat(1000);
        assert!(parse(&dicts).is_err());
    }

    #[test]
    fn never_panics_on_prefixes_of_valid_input() {
        let text = r#"{'host': u'cp\u00e9', "w": [1, -2.5e3, (True,), None], 'x': 0x1f, r'\q': '''a'''} # c"#;
        for (i, _) in text.char_indices() {
            let _ = parse(&text[..i]);
            let _ = parse(&text[i..]);
        }
        for junk in [
            "\\", "'\\", "-", "--", "+-.", "0x", "r", "u'", "'''", "[#", "\u{0}", "e1", "1e+",
            "0b2",
        ] {
            let _ = parse(junk);
        }
    }

    #[test]
    fn str_lists() {
        assert_eq!(
            ok("'ProxyFetch'").as_str_list(),
            Ok(vec!["ProxyFetch".to_string()])
        );
        assert_eq!(
            ok("('a', 'b')").as_str_list(),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(ok("[]").as_str_list(), Ok(vec![]));
        assert!(ok("['a', 1]")
            .as_str_list()
            .unwrap_err()
            .to_string()
            .contains("an int"));
        assert!(ok("{}").as_str_list().is_err());
    }

    #[test]
    fn dict_get_takes_the_last_duplicate() {
        let v = ok("{'weight': 1, 'weight': 2}");
        assert_eq!(v.get("weight"), Some(&PyValue::Int(2)));
        assert_eq!(v.get("missing"), None);
        assert_eq!(PyValue::Int(1).get("x"), None);
    }

    #[test]
    fn booleans() {
        for t in ["t", "true", "True", "Y", "yes", "ON", "1", " yes "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["f", "false", "FALSE", "n", "No", "off", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "2", "maybe", "'yes'"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn display_is_python_like() {
        assert_eq!(
            ok("[1, 'a', (None,), {'k': True}]").to_string(),
            r#"[1, "a", (None,), {"k": True}]"#
        );
    }
}
