//! llama.cpp's GBNF grammars, translated to llguidance's Lark syntax (llguidance reads
//! Lark; this is a syntax translation only, the grammar engine stays llguidance's).
//!
//! GBNF: `name ::= alternatives`, rule names of letters, digits, `-` and `_`, string
//! literals with `\n \r \t \\ \" \xHH \uHHHH \UHHHHHHHH` escapes, character classes
//! `[a-z]` / `[^"\\]`, `.` for any character, groups, `|`, and the postfix operators
//! `* + ?` and `{m}`, `{m,}`, `{m,n}`, `{,n}`; `#` starts a comment; the start rule is
//! `root`. Each rule becomes one Lark rule (names lower-cased, `-` → `_`), literals
//! become JSON-escaped Lark strings and classes become regexes.

use std::collections::HashMap;

/// Whether `text` defines a GBNF rule (`name ::= ...` at the start of a line).
pub(super) fn looks_like_gbnf(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        let name_len = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
        name_len > 0 && line[name_len..].trim_start().starts_with("::=")
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Define,
    Literal(String),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    AnyChar,
    Open,
    Close,
    Bar,
    /// `*`, `+` or `?`.
    Postfix(char),
    /// `{m}`, `{m,}`, `{m,n}` as Lark writes them.
    Repeat(String),
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl Lexer<'_> {
    fn err(&self, at: usize, what: &str) -> String {
        let line = self.text[..at.min(self.text.len())].matches('\n').count() + 1;
        format!("GBNF line {line}: {what}")
    }

    fn next_char(&mut self, at: usize, what: &str) -> Result<char, String> {
        self.chars
            .next()
            .map(|(_, c)| c)
            .ok_or_else(|| self.err(at, &format!("unexpected end of grammar in {what}")))
    }

    /// One character of a literal or class, after its backslash when escaped.
    fn escaped(&mut self, at: usize, what: &str) -> Result<char, String> {
        let c = self.next_char(at, what)?;
        if c != '\\' {
            return Ok(c);
        }
        let e = self.next_char(at, what)?;
        let hex = |lx: &mut Self, n: usize| -> Result<char, String> {
            let mut v = 0u32;
            for _ in 0..n {
                let d = lx.next_char(at, what)?;
                v = v * 16
                    + d.to_digit(16)
                        .ok_or_else(|| lx.err(at, &format!("'{d}' is not a hex digit")))?;
            }
            char::from_u32(v).ok_or_else(|| lx.err(at, &format!("U+{v:X} is not a character")))
        };
        Ok(match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '\\' | '"' | '[' | ']' | '-' | '^' | '/' => e,
            other => return Err(self.err(at, &format!("unknown escape '\\{other}' in {what}"))),
        })
    }

    fn tokens(mut self) -> Result<Vec<Tok>, String> {
        let mut out = Vec::new();
        while let Some(&(at, c)) = self.chars.peek() {
            match c {
                c if c.is_whitespace() => {
                    self.chars.next();
                }
                '#' => while self.chars.next_if(|&(_, c)| c != '\n').is_some() {},
                ':' => {
                    self.chars.next();
                    if self.chars.next().map(|x| x.1) != Some(':')
                        || self.chars.next().map(|x| x.1) != Some('=')
                    {
                        return Err(self.err(at, "expected '::='"));
                    }
                    out.push(Tok::Define);
                }
                '"' => {
                    self.chars.next();
                    let mut s = String::new();
                    loop {
                        match self.chars.peek() {
                            None => return Err(self.err(at, "unterminated string literal")),
                            Some(&(_, '"')) => {
                                self.chars.next();
                                break;
                            }
                            _ => s.push(self.escaped(at, "a string literal")?),
                        }
                    }
                    out.push(Tok::Literal(s));
                }
                '[' => {
                    self.chars.next();
                    let negated = self.chars.next_if(|&(_, c)| c == '^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        match self.chars.peek() {
                            None => return Err(self.err(at, "unterminated character class")),
                            Some(&(_, ']')) => {
                                self.chars.next();
                                break;
                            }
                            _ => {
                                let lo = self.escaped(at, "a character class")?;
                                let dash = self.chars.peek().map(|x| x.1) == Some('-');
                                let mut ahead = self.chars.clone();
                                ahead.next();
                                let closes = ahead.peek().map(|x| x.1) == Some(']');
                                if dash && !closes {
                                    self.chars.next();
                                    let hi = self.escaped(at, "a character class")?;
                                    if hi < lo {
                                        return Err(
                                            self.err(at, &format!("empty range '{lo}-{hi}'"))
                                        );
                                    }
                                    ranges.push((lo, hi));
                                } else {
                                    ranges.push((lo, lo));
                                }
                            }
                        }
                    }
                    if ranges.is_empty() {
                        return Err(self.err(at, "empty character class '[]'"));
                    }
                    out.push(Tok::Class { negated, ranges });
                }
                '.' => {
                    self.chars.next();
                    out.push(Tok::AnyChar);
                }
                '(' => {
                    self.chars.next();
                    out.push(Tok::Open);
                }
                ')' => {
                    self.chars.next();
                    out.push(Tok::Close);
                }
                '|' => {
                    self.chars.next();
                    out.push(Tok::Bar);
                }
                '*' | '+' | '?' => {
                    self.chars.next();
                    out.push(Tok::Postfix(c));
                }
                '{' => {
                    self.chars.next();
                    let mut inner = String::new();
                    loop {
                        match self.chars.next() {
                            None => return Err(self.err(at, "unterminated '{'")),
                            Some((_, '}')) => break,
                            Some((_, c)) if c.is_ascii_digit() || c == ',' => inner.push(c),
                            Some((_, c)) if c.is_whitespace() => {}
                            Some((_, c)) => {
                                return Err(self.err(at, &format!("'{c}' in a repetition")))
                            }
                        }
                    }
                    let (lo, hi) = match inner.split_once(',') {
                        None => (inner.as_str(), Some(inner.as_str())),
                        Some((lo, hi)) => (lo, (!hi.is_empty()).then_some(hi)),
                    };
                    let num = |s: &str| s.parse::<u32>().ok();
                    let lo = if lo.is_empty() { Some(0) } else { num(lo) };
                    let hi = hi.map(num);
                    let rep = match (lo, hi) {
                        (Some(lo), None) => format!("{{{lo},}}"),
                        (Some(lo), Some(Some(hi))) if hi >= lo => format!("{{{lo},{hi}}}"),
                        _ => return Err(self.err(at, &format!("bad repetition '{{{inner}}}'"))),
                    };
                    out.push(Tok::Repeat(rep));
                }
                '<' | '!' => return Err(self.err(
                    at,
                    "token references (<...>, !<...>) are not supported; use Lark's <[id]> syntax",
                )),
                c if is_name_char(c) => {
                    let mut name = String::new();
                    while let Some((_, c)) = self.chars.next_if(|&(_, c)| is_name_char(c)) {
                        name.push(c);
                    }
                    out.push(Tok::Name(name));
                }
                other => return Err(self.err(at, &format!("unexpected character '{other}'"))),
            }
        }
        Ok(out)
    }
}

/// A character for a regex class: always `\x{H}`, so nothing needs escaping.
fn class_char(c: char) -> String {
    format!("\\x{{{:X}}}", c as u32)
}

/// Translates a GBNF grammar to Lark with a `start: root` rule; errors name the GBNF
/// line and the problem.
pub fn gbnf_to_lark(text: &str) -> Result<String, String> {
    let lexer = Lexer {
        chars: text.char_indices().peekable(),
        text,
    };
    let toks = lexer.tokens()?;
    // Rules start at `name ::=`.
    let starts: Vec<usize> = (0..toks.len())
        .filter(|&i| matches!(toks[i], Tok::Name(_)) && toks.get(i + 1) == Some(&Tok::Define))
        .collect();
    if starts.first() != Some(&0) {
        return Err(if toks.is_empty() {
            "the GBNF grammar is empty".to_string()
        } else {
            "a GBNF grammar must start with a rule definition 'name ::= ...'".to_string()
        });
    }
    // Lark names: lower case, `_` for `-`, distinct, never `start`.
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut taken: std::collections::HashSet<String> = ["start".to_string()].into();
    for &s in &starts {
        let Tok::Name(n) = &toks[s] else {
            unreachable!()
        };
        if names.contains_key(n.as_str()) {
            return Err(format!("GBNF rule '{n}' is defined twice"));
        }
        let mut base: String = n
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                '-' => '_',
                c => c,
            })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base = format!("r_{base}");
        }
        let mut lark = base.clone();
        let mut k = 2;
        while taken.contains(&lark) {
            lark = format!("{base}_{k}");
            k += 1;
        }
        taken.insert(lark.clone());
        names.insert(n, lark);
    }
    let Some(root) = names.get("root") else {
        return Err("the GBNF grammar has no 'root' rule".into());
    };
    let mut out = format!("start: {root}\n");
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(toks.len());
        let Tok::Name(n) = &toks[s] else {
            unreachable!()
        };
        out.push_str(&names[n.as_str()]);
        out.push(':');
        let body = &toks[s + 2..end];
        if body.is_empty() {
            return Err(format!("GBNF rule '{n}' has an empty body"));
        }
        for t in body {
            out.push(' ');
            match t {
                Tok::Name(r) => match names.get(r.as_str()) {
                    Some(l) => out.push_str(l),
                    None => return Err(format!("GBNF rule '{n}' uses undefined rule '{r}'")),
                },
                Tok::Define => return Err(format!("GBNF rule '{n}': misplaced '::='")),
                Tok::Literal(s) => {
                    out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?)
                }
                Tok::Class { negated, ranges } => {
                    out.push_str(if *negated { "/[^" } else { "/[" });
                    for &(lo, hi) in ranges {
                        out.push_str(&class_char(lo));
                        if hi != lo {
                            out.push('-');
                            out.push_str(&class_char(hi));
                        }
                    }
                    out.push_str("]/");
                }
                Tok::AnyChar => out.push_str("/(?s:.)/"),
                Tok::Open => out.push('('),
                Tok::Close => out.push(')'),
                Tok::Bar => out.push('|'),
                Tok::Postfix(c) => {
                    out.pop();
                    out.push(*c)
                }
                Tok::Repeat(r) => {
                    out.pop();
                    out.push_str(r)
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_rules_literals_classes_and_repeats() {
        let g = r#"
# a comment
root ::= "yes" | "no" ws-opt item{2,3}
ws-opt ::= [ \t\n]*   # trailing comment
item ::= ( [a-z0-9] | "\x41\"" )+ .? [^"\\] x{,4} x{2}
x ::= "é"
"#;
        let lark = gbnf_to_lark(g).unwrap();
        let want = [
            "start: root",
            "root: \"yes\" | \"no\" ws_opt item{2,3}",
            "ws_opt: /[\\x{20}\\x{9}\\x{A}]/*",
            "item: ( /[\\x{61}-\\x{7A}\\x{30}-\\x{39}]/ | \"A\\\"\" )+ /(?s:.)/? /[^\\x{22}\\x{5C}]/ x{0,4} x{2,2}",
            "x: \"é\"",
        ];
        assert_eq!(lark.lines().collect::<Vec<_>>(), want, "{lark}");
        assert!(looks_like_gbnf(g));
        assert!(!looks_like_gbnf("start: \"a\" | b\nb: /x+/"));
    }

    #[test]
    fn names_are_made_distinct_and_start_is_reserved() {
        let lark = gbnf_to_lark("root ::= start Start\nstart ::= \"a\"\nStart ::= \"b\"").unwrap();
        assert_eq!(
            lark.lines().collect::<Vec<_>>(),
            [
                "start: root",
                "root: start_2 start_3",
                "start_2: \"a\"",
                "start_3: \"b\""
            ]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |g: &str| gbnf_to_lark(g).unwrap_err();
        assert!(err("item ::= \"a\"").contains("no 'root' rule"));
        assert!(err("root ::= item").contains("undefined rule 'item'"));
        assert!(err("root ::= \"abc").contains("unterminated string"));
        assert!(err("root ::= [z-a]").contains("empty range"));
        assert!(err("root ::= \"a\"\n\nroot ::= \"b\"").contains("defined twice"));
        assert!(err("root ::= a{3,1}\na ::= \"x\"").contains("bad repetition"));
        assert!(err("root ::= <think>").contains("not supported"));
        assert!(err("root ::= \"\\q\"").contains("line 1: unknown escape"));
        assert!(err("").contains("empty"));
    }
}
